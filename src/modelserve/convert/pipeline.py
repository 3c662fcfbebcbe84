"""The steps of a conversion, in order: export, precision, graph optimisation, TensorRT, accuracy and
speed, write. Precision comes before optimisation: the quantisation and FP16 tools work on plain ONNX
operators, and the optimiser then fuses what they produce (QDQ pairs into integer kernels)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import onnx

from modelserve.convert import optimize as optimizer
from modelserve.convert import precision as lower
from modelserve.convert import tensorrt
from modelserve.convert.export import export_onnx
from modelserve.convert.output import Destination, config_text, write
from modelserve.convert.precision import Precision
from modelserve.convert.report import Report, advise, compare, median_ms
from modelserve.convert.source import Arrays, ConversionError, OnnxSession, Source, sample_inputs
from modelserve.repository.config import Platform
from modelserve.runtimes.onnx import _spec

Step = Callable[[str], AbstractContextManager[object]]


@dataclass(frozen=True)
class Options:
    """How to convert: every choice the command line offers."""

    precision: Precision = Precision.FP32
    optimization_level: int = 1
    keep_io_types: bool = True
    calibration: Path | None = None
    engine: str = "onnx"
    tolerance: float | None = None
    force: bool = False
    samples: int = 32
    speed_runs: int = 20
    max_batch_size: int = 32


DEFAULT_TOLERANCE = {Precision.FP32: 1e-4, Precision.FP16: 1e-2, Precision.INT8: 1e-1}
HELD_OUT = 4  # one --calibration-data row in this many is kept out of calibration to measure accuracy on


def convert(source: Source, options: Options, destination: Destination, step: Step) -> Report:
    """Run every step, each inside ``step(title)`` (the progress display); raise ConversionError to refuse."""
    if options.engine == "tensorrt" and (lacking := tensorrt.missing()):
        raise ConversionError(f"--engine tensorrt needs {lacking}; leave it out to convert to ONNX")
    if options.engine == "tensorrt" and options.precision is Precision.INT8 and options.calibration is None:
        raise ConversionError("INT8 TensorRT engines need --calibration-data: TensorRT takes static scales only")
    given = lower.read_calibration(options.calibration, source) if options.calibration else None
    calibration, held_out = _hold_out(given, options.samples) if given is not None else (None, None)
    report = Report(source.description, options.precision.value, options.optimization_level, options.samples)
    with tempfile.TemporaryDirectory(prefix="modelserve-convert-") as scratch:
        work = Path(scratch)
        with step("export to ONNX" if source.is_torch else "read ONNX"):
            baseline = work / "fp32.onnx"
            if source.is_torch:
                export_onnx(source, baseline)
            else:
                assert source.path is not None
                shutil.copyfile(source.path, baseline)
        with step(f"precision {options.precision}"):
            lowered = _lower(baseline, work, options, calibration)
        with step(f"graph optimisation level {options.optimization_level}"):
            final = optimizer.optimize(lowered, work / "optimized.onnx", options.optimization_level)
        session = OnnxSession(final)
        batched = all(_spec(i).shape[:1] == (-1,) for i in session.session.get_inputs())
        with step("accuracy against the source"):
            samples, report.accuracy_on = _samples(
                source, given, held_out, options.samples if batched else source.inputs[0].shape[0], batched
            )
            report.samples = len(next(iter(samples.values())))
            report.outputs = compare(source.run(samples), session.run_named(samples))
        with step("speed against FP32 ONNX"):
            report.speed_batch = source.inputs[0].shape[0] if source.inputs[0].shape else 1
            speed = sample_inputs(source, report.speed_batch, seed=1)
            reference = OnnxSession(baseline)
            report.baseline_ms = median_ms(lambda: reference.run_named(speed), options.speed_runs)
            report.converted_ms = median_ms(lambda: session.run_named(speed), options.speed_runs)
        operators = {node.op_type for node in onnx.load(str(baseline), load_external_data=False).graph.node}
        report.advice = advise(options.precision.value, calibration is not None, operators, report.speedup)
        tolerance = options.tolerance if options.tolerance is not None else DEFAULT_TOLERANCE[options.precision]
        if report.max_abs_error > tolerance and not options.force:
            raise RefusedError(report, tolerance)
        max_batch_size = options.max_batch_size if batched else 0
        inputs = tuple(_spec(i) for i in session.session.get_inputs())
        outputs = tuple(_spec(o) for o in session.session.get_outputs())
        provenance = f"{source.description}, {options.precision}, optimisation level {options.optimization_level}"
        if options.engine == "tensorrt":
            with step("TensorRT engine"):
                engine = work / "model.plan"
                built_with = tensorrt.build_engine(
                    lowered, engine, source.inputs, precision=options.precision,
                    level=options.optimization_level, max_batch_size=max_batch_size,
                )  # fmt: skip
            parameters = {"tensorrt_version": built_with}
            text = config_text(Platform.TENSORRT, inputs, outputs, max_batch_size=max_batch_size,
                               provenance=provenance, parameters=parameters)  # fmt: skip
            written = write(destination, Platform.TENSORRT, engine.read_bytes(), text)
        else:
            text = config_text(Platform.ONNX, inputs, outputs, max_batch_size=max_batch_size, provenance=provenance)
            written = write(destination, Platform.ONNX, final.read_bytes(), text)
    report.written = [str(path) for path in written]
    return report


class RefusedError(ConversionError):
    """The converted model is further from its source than the tolerance allows."""

    def __init__(self, report: Report, tolerance: float) -> None:
        super().__init__(
            f"max abs error {report.max_abs_error:.3g} exceeds --tolerance {tolerance:g}; nothing written "
            "(raise --tolerance, use calibration data or another precision, or --force to write it anyway)"
        )
        self.report = report


def _lower(model: Path, work: Path, options: Options, calibration: Arrays | None) -> Path:
    if options.precision is Precision.FP16:
        return lower.to_fp16(model, work / "fp16.onnx", keep_io_types=options.keep_io_types)
    if options.precision is Precision.INT8:
        return lower.to_int8(model, work / "int8.onnx", calibration)
    return model


def _hold_out(given: Arrays, rows: int) -> tuple[Arrays, Arrays | None]:
    """The rows to calibrate on and those kept out of calibration to measure accuracy on: the last one in
    ``HELD_OUT``, at most ``rows``. Accuracy measured on the rows that set the scales flatters static INT8:
    real traffic is not the calibration set. Under ``HELD_OUT`` rows, nothing is kept out."""
    count = len(next(iter(given.values())))
    held = min(rows, count // HELD_OUT)
    if held == 0:
        return given, None
    return {n: a[: count - held] for n, a in given.items()}, {n: a[count - held :] for n, a in given.items()}


def _samples(
    source: Source, given: Arrays | None, held_out: Arrays | None, rows: int, batched: bool
) -> tuple[Arrays, str]:
    """The accuracy samples and what they are. Real data says more than noise; a model without a batch axis
    takes exactly ``rows``, which only the calibration rows themselves may supply."""
    if held_out is not None and batched:
        return held_out, "calibration rows held out of calibration"
    if given is not None:
        return {name: array[:rows] for name, array in given.items()}, "the calibration rows (in-sample)"
    return sample_inputs(source, rows, seed=0), "random inputs"
