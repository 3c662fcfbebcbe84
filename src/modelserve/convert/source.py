"""What a conversion starts from: a TorchScript file, an ``nn.Module`` built by ``module:callable``, an
ONNX file, or a model of a repository by name; and the tensors it takes and gives.

Torch sources carry no tensor names or shapes, so the caller states the input shapes (and may name
the tensors); a repository model takes both from its config.yaml, an ONNX file from its graph.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.errors import ModelLoadError
from modelserve.repository.config import ModelConfig, Platform

Arrays = dict[str, np.ndarray[Any, Any]]


class ConversionError(Exception):
    """A conversion that cannot go on, with what the user should change."""


class SourceKind(StrEnum):
    """The kinds of model a conversion starts from."""

    TORCHSCRIPT = "torchscript"
    MODULE = "module:callable"
    ONNX = "onnx"


@dataclass(frozen=True)
class InputSpec:
    """One input: its name, datatype (V2 name) and a full example shape, batch dimension first."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass
class Source:
    """A model to convert: its kind, where it came from, and what it takes and returns."""

    kind: SourceKind
    description: str
    inputs: list[InputSpec]
    output_names: list[str]
    path: Path | None = None  # the ONNX or TorchScript file
    module: Any = None  # the torch module, for torch sources

    @property
    def is_torch(self) -> bool:
        """Whether the source runs in PyTorch and must be exported to ONNX first."""
        return self.kind is not SourceKind.ONNX

    def run(self, inputs: Arrays) -> Arrays:
        """The source model's own outputs, the reference every converted model is checked against."""
        if not self.is_torch:
            assert self.path is not None
            return OnnxSession(self.path).run_named(inputs)
        torch: Any = importlib.import_module("torch")
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[spec.name])) for spec in self.inputs]
        with torch.inference_mode():
            result = self.module(*tensors)
        if isinstance(result, dict):
            return {name: result[name].detach().numpy() for name in self.output_names}
        results = (result,) if isinstance(result, torch.Tensor) else tuple(result)
        if len(results) != len(self.output_names):
            raise ConversionError(
                f"the model returns {len(results)} tensors but {len(self.output_names)} output names were given "
                f"({', '.join(self.output_names)}); pass --output-name once per output"
            )
        return {name: t.detach().numpy() for name, t in zip(self.output_names, results, strict=True)}


class OnnxSession:
    """An ONNX Runtime CPU session that answers by output name."""

    def __init__(self, model: Path | bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # conversions leave initializers ONNX Runtime warns about
        self.session = ort.InferenceSession(
            str(model) if isinstance(model, Path) else model, options, providers=["CPUExecutionProvider"]
        )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._dtypes = {i.name: _ORT_DTYPES.get(i.type) for i in self.session.get_inputs()}

    def run_named(self, inputs: Arrays) -> Arrays:
        """Every output by name; inputs are cast to what the model takes (FP16 inputs, say)."""
        feed = {n: a.astype(self._dtypes[n]) if self._dtypes.get(n) else a for n, a in inputs.items()}
        return dict(zip(self.output_names, self.session.run(self.output_names, feed), strict=True))


_ORT_DTYPES = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}


def open_source(
    reference: str,
    *,
    repository: Path | None,
    input_shapes: list[tuple[int, ...]],
    input_names: list[str],
    input_datatype: str,
    output_names: list[str],
) -> Source:
    """Resolve ``reference``: a file, ``module:callable``, or the name of a model in ``repository``."""
    path = Path(reference)
    if path.is_file():
        if path.suffix == ".onnx":
            return _onnx(path, input_shapes, f"ONNX file {path}")
        return _torch(_load_torchscript(path), SourceKind.TORCHSCRIPT, f"TorchScript file {path}",
                      input_shapes, input_names, input_datatype, output_names)  # fmt: skip
    if repository is not None and (repository / reference).is_dir():
        return _from_repository(repository, reference, input_shapes)
    if ":" in reference and not path.exists():
        return _torch(_build_module(reference), SourceKind.MODULE, f"module {reference}",
                      input_shapes, input_names, input_datatype, output_names)  # fmt: skip
    where = f" nor a model of {repository}" if repository is not None else ""
    raise ConversionError(
        f"{reference!r} is neither a file (.onnx, or a TorchScript .pt), a module:callable{where}; "
        "give a model file, package.module:function returning an nn.Module, or --repository DIR and a model name"
    )


def _onnx(path: Path, input_shapes: list[tuple[int, ...]], description: str) -> Source:
    try:
        session = OnnxSession(path)
    except Exception as exc:  # onnxruntime raises its own untyped errors for any bad file
        raise ConversionError(f"{path} is not a loadable ONNX model: {exc}") from exc
    from modelserve.runtimes.onnx import _spec

    specs = [_spec(node) for node in session.session.get_inputs()]
    if input_shapes and len(input_shapes) != len(specs):
        raise ConversionError(f"{path} has {len(specs)} inputs but {len(input_shapes)} --input-shape were given")
    inputs = []
    for i, spec in enumerate(specs):
        shape = input_shapes[i] if input_shapes else tuple(max(d, 1) for d in spec.shape)
        inputs.append(InputSpec(spec.name, spec.datatype, shape))
    return Source(SourceKind.ONNX, description, inputs, session.output_names, path=path)


def _torch(
    module: Any,
    kind: SourceKind,
    description: str,
    input_shapes: list[tuple[int, ...]],
    input_names: list[str],
    datatype: str,
    output_names: list[str],
) -> Source:
    if not input_shapes:
        raise ConversionError(
            f"{description} does not say what it takes: give --input-shape for each input, batch first "
            "(e.g. --input-shape 1,3,224,224); the first dimension is exported as a variable batch size"
        )
    if input_names and len(input_names) != len(input_shapes):
        raise ConversionError(f"{len(input_names)} --input-name for {len(input_shapes)} --input-shape; give one each")
    names = input_names or (["input"] if len(input_shapes) == 1 else [f"input{i}" for i in range(len(input_shapes))])
    inputs = [InputSpec(name, datatype, shape) for name, shape in zip(names, input_shapes, strict=True)]
    source = Source(kind, description, inputs, output_names or ["output"], module=module.eval())
    if not output_names:  # count what it returns, and name each
        returned = _count_outputs(source)
        source.output_names = ["output"] if returned == 1 else [f"output{i}" for i in range(returned)]
    return source


def _count_outputs(source: Source) -> int:
    torch: Any = importlib.import_module("torch")
    example = sample_inputs(source, 1, seed=0)
    try:
        with torch.inference_mode():
            result = source.module(*(torch.from_numpy(example[s.name]) for s in source.inputs))
    except Exception as exc:  # the model's own complaint about what it was given
        shapes = " and ".join(str(list(spec.shape)) for spec in source.inputs)
        raise ConversionError(
            f"{source.description} cannot run on inputs of shape {shapes}: {type(exc).__name__}: {exc}; "
            "check --input-shape (once per input, batch first)"
        ) from None
    if isinstance(result, dict):
        raise ConversionError("the model returns a dict; name its outputs with --output-name, once per key")
    return 1 if isinstance(result, torch.Tensor) else len(result)


def _from_repository(repository: Path, name: str, input_shapes: list[tuple[int, ...]]) -> Source:
    from modelserve.repository.layout import ModelRepository

    try:
        model = ModelRepository(repository).source(name)
    except ModelLoadError as exc:
        raise ConversionError(exc.message) from None
    version = max(model.files)
    path = model.files[version]
    description = f"model {name} version {version} of {repository}"
    if model.platform is Platform.ONNX:
        return _onnx(path, input_shapes, description)
    if model.platform is not Platform.TORCHSCRIPT:
        raise ConversionError(f"{description} is {model.platform}; only ONNX and TorchScript models convert")
    return _repository_torchscript(path, model.config, description, input_shapes)


def _repository_torchscript(path: Path, config: ModelConfig, description: str, shapes: list[tuple[int, ...]]) -> Source:
    batched = config.max_batch_size != 0
    default = [((1,) if batched else ()) + tuple(max(d, 1) for d in t.dims) for t in config.inputs]
    inputs = [InputSpec(t.name, t.datatype, shape) for t, shape in zip(config.inputs, shapes or default, strict=True)]
    module = _load_torchscript(path).eval()
    return Source(SourceKind.TORCHSCRIPT, description, inputs, [t.name for t in config.outputs], path, module)


def _load_torchscript(path: Path) -> Any:
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        raise ConversionError(f"{path} needs PyTorch to convert: pip install 'modelserve[torch]'") from None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # TorchScript is deprecated, yet read
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError or pickle errors for any bad file
        raise ConversionError(f"{path} is neither ONNX (.onnx) nor a loadable TorchScript file: {exc}") from exc


def _build_module(reference: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, ".")  # module:callable names a module of the current project, as uvicorn's do
    try:
        factory: Callable[[], Any] = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConversionError(f"cannot find {reference}: {exc}") from None
    module = factory()
    torch: Any = importlib.import_module("torch")
    if not isinstance(module, torch.nn.Module):
        raise ConversionError(f"{reference}() returned {type(module).__name__}, not a torch.nn.Module")
    return module


def sample_inputs(source: Source, batch: int, *, seed: int) -> Arrays:
    """Random inputs of every input's shape with ``batch`` rows (standard normal floats, 0/1 integers)."""
    from modelserve.types import numpy_dtype

    rng = np.random.default_rng(seed)
    arrays: Arrays = {}
    for spec in source.inputs:
        shape = (batch, *spec.shape[1:]) if spec.shape else ()
        dtype = numpy_dtype(spec.datatype)
        values = rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 2, shape)
        arrays[spec.name] = values.astype(dtype)
    return arrays
