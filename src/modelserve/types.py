"""Tensors and requests as the core sees them: numpy arrays with Open Inference Protocol datatypes.

Protocols decode into these and encode out of them; nothing here knows of HTTP or gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.errors import InvalidInput

# The V2 protocol's datatypes. BYTES tensors are numpy object arrays holding `bytes`, as in tritonclient.
DATATYPE_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_NUMPY_TO_DATATYPE = {dtype: name for name, dtype in DATATYPE_TO_NUMPY.items()}


def read_input_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
    """One array per input name from ``path``: an .npz keyed by input name, or an .npy for a single input.

    Shared by warmup files and calibration data, which users write by hand with ``np.save``/``np.savez``;
    a ValueError says what to fix (a file numpy cannot read, one array for several inputs, a missing name).
    """
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {name: loaded for name in names[:1]}
            single = True
        else:
            with loaded:
                arrays = {name: loaded[name] for name in loaded.files}
            single = False
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if single and len(names) != 1:
        raise ValueError(f"{path} holds one array but the model has {len(names)} inputs; use an .npz")
    for name in names:
        if name not in arrays:
            raise ValueError(f"{path} has no array named '{name}' (it has {', '.join(arrays) or 'none'})")
    return {name: arrays[name] for name in names}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a V2 datatype, or InvalidInput naming the ones this server accepts."""
    try:
        return DATATYPE_TO_NUMPY[datatype]
    except KeyError:
        raise InvalidInput(
            f"unsupported datatype {datatype!r}; expected one of {', '.join(DATATYPE_TO_NUMPY)}"
        ) from None


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The V2 datatype of a numpy dtype; numpy strings travel as BYTES."""
    if dtype.kind in "USO":
        return "BYTES"
    try:
        return _NUMPY_TO_DATATYPE[dtype]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output: its name, V2 datatype and full shape (-1 where any size is accepted)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        """The spec as an error message shows it: ``INPUT0 INT32 [-1, 16]``."""
        return f"{self.name} {self.datatype} [{', '.join(map(str, self.shape))}]"


@dataclass(slots=True)
class InferenceRequest:
    """One inference call after decoding: tensors by name, plus what the caller asked to get back."""

    model: str
    inputs: dict[str, np.ndarray[Any, Any]]
    version: int | None = None
    outputs: list[str] | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferenceResponse:
    """The result of one request: the version that served it and its output tensors by name."""

    model: str
    version: int
    outputs: dict[str, np.ndarray[Any, Any]]
    id: str | None = None
