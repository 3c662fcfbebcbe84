"""Lower precision: FP16 weights and activations, or INT8 by ONNX Runtime's quantisation tools.

FP16 keeps the model's inputs and outputs FP32 unless asked (casts at the edges), so clients need not
change. INT8 is dynamic (weights quantised ahead, activations at run time: no data needed, best for
MatMul-heavy models) or, given calibration data, static (activation ranges measured on that data,
written as QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into integer kernels: what
convolutional networks need to run faster).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from modelserve.convert.source import Arrays, ConversionError, Source
from modelserve.types import numpy_dtype, read_input_arrays


class Precision(StrEnum):
    """The numeric precisions a converted model can run in."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


def to_fp16(model: Path, target: Path, *, keep_io_types: bool) -> Path:
    """Convert every float tensor to FP16; with ``keep_io_types`` inputs and outputs stay FP32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load(str(model)), keep_io_types=keep_io_types)
    onnx.save(converted, str(target))
    return target


def to_int8(model: Path, target: Path, calibration: Arrays | None) -> Path:
    """Quantise to INT8: static over ``calibration`` when given, dynamic otherwise."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the tools log each node they skip at INFO and WARNING
    try:
        if calibration is None:
            quantize_dynamic(str(model), str(target), weight_type=QuantType.QInt8)
            return target
        prepared = target.with_name("prepared.onnx")
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _reader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,  # u8 activations, s8 weights: the fast pairing on x86 CPUs
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        prepared.unlink()
        return target
    finally:
        logging.getLogger().setLevel(quiet)


def read_calibration(path: Path, source: Source) -> Arrays:
    """The calibration samples in ``path``: an .npz keyed by input name, or an .npy for one input."""
    if path.suffix not in (".npz", ".npy"):
        raise ConversionError(f"--calibration-data {path} must be an .npz (one array per input) or an .npy")
    try:
        arrays = read_input_arrays(path, [spec.name for spec in source.inputs])
    except ValueError as exc:
        raise ConversionError(f"--calibration-data: {exc}") from None
    data: Arrays = {}
    for spec in source.inputs:
        array = arrays[spec.name]
        if array.shape[1:] != spec.shape[1:]:
            raise ConversionError(
                f"{path}: '{spec.name}' has shape {list(array.shape)}; expected [samples, "
                f"{', '.join(str(d) for d in spec.shape[1:])}]"
            )
        data[spec.name] = array.astype(numpy_dtype(spec.datatype), copy=False)
    counts = {len(a) for a in data.values()}
    if len(counts) != 1 or 0 in counts:
        raise ConversionError(f"{path}: every input needs the same number of samples, at least one; got {counts}")
    return data


def _reader(data: Arrays, rows: int = 8) -> Any:
    """A CalibrationDataReader feeding ``data`` to ONNX Runtime's calibrator, ``rows`` samples at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    count = len(next(iter(data.values())))
    batches: Iterator[dict[str, Any]] = (
        {name: array[start : start + rows] for name, array in data.items()} for start in range(0, count, rows)
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, Any] | None:
            return next(batches, None)

    return Reader()
