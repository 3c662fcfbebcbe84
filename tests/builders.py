"""Small real models and repositories for tests, built locally with onnx.helper (no torch needed).

Every test that needs a model file takes it from here, so the shapes the tests rely on live in one
place. Broken repositories are built by writing real broken files, never by faking the loader.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper

_TYPES = {"FP32": TensorProto.FLOAT, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64, "FP64": TensorProto.DOUBLE}


def add_sub_onnx(path: Path, *, datatype: str = "INT32", dims: tuple[int | str, ...] = ("batch", 16)) -> Path:
    """Triton's `simple`: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, with the given shape."""
    kind = _TYPES[datatype]
    inputs = [helper.make_tensor_value_info(n, kind, list(dims)) for n in ("INPUT0", "INPUT1")]
    outputs = [helper.make_tensor_value_info(n, kind, list(dims)) for n in ("OUTPUT0", "OUTPUT1")]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "add_sub",
        inputs,
        outputs,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def scale_onnx(path: Path, *, factor: float = 2.0, features: int = 4, batch: int | str = "batch") -> Path:
    """``y = x * factor`` on FP32 [batch, features]: a model whose result identifies which file ran."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, features])
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [factor])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "scale", [x], [y], initializer=[k])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def matmul_onnx(path: Path, *, features: int = 2048) -> Path:
    """``y = x @ W`` on FP32 [batch, features] with random weights: a model big enough that memory
    it leaks on unload shows in the process's RSS (2048 features: 16 MiB of weights)."""
    weights = np.random.default_rng(0).standard_normal((features, features)).astype(np.float32)
    w = onnx.numpy_helper.from_array(weights, "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul", [x], [y], initializer=[w])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def odd_batch_fails_onnx(path: Path) -> Path:
    """FP32 [n, 3] reshaped to [2, -1]: runs for an even ``n`` and raises in ONNX Runtime for an odd one,
    a model that fails at runtime on demand (write a config with ``max_batch_size: 0``)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "m"])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, -1])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "odd", [x], [y], [shape])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def write_config(model_dir: Path, text: str) -> Path:
    """Write ``config.yaml`` for a model folder."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.yaml"
    path.write_text(text)
    return path


def copy_model(source_repo: Path, name: str, target_repo: Path, new_name: str | None = None) -> Path:
    """Copy one model folder between repositories."""
    target = target_repo / (new_name or name)
    shutil.copytree(source_repo / name, target)
    return target


def broken_repository(root: Path, good_repo: Path) -> Path:
    """A repository of the four example models plus one broken model of each kind the issue lists."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("mlp", "simple", "iris", "tiny_cnn"):
        copy_model(good_repo, name, root)
    write_config(root / "bad_yaml", "platform: onnx\ninputs: [unclosed\n")
    scale_onnx(root / "bad_yaml" / "1" / "model.onnx")
    write_config(root / "unknown_field", "platform: onnx\nmax_batch_sise: 4\n")
    scale_onnx(root / "unknown_field" / "1" / "model.onnx")
    corrupt = root / "corrupt" / "1" / "model.onnx"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"this is not an onnx graph" * 10)
    write_config(
        root / "wrong_dims",
        "max_batch_size: 8\ninputs:\n  - {name: x, datatype: FP32, dims: [5]}\n",
    )
    scale_onnx(root / "wrong_dims" / "1" / "model.onnx")
    return root


def reference_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for the example models, keyed by model name."""
    rng = np.random.default_rng(seed)
    return {
        "mlp": rng.standard_normal((3, 16)).astype(np.float32),
        "tiny_cnn": rng.standard_normal((2, 1, 8, 8)).astype(np.float32),
        "iris": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float64),
        "simple": rng.integers(-100, 100, (2, 16)).astype(np.int32),
    }


def echo_bytes_onnx(path: Path) -> Path:
    """BYTES in, the same BYTES out (`TEXT` → `ECHO`, [batch, 2]): exercises string tensors end to end."""
    text = helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["batch", 2])
    echo = helper.make_tensor_value_info("ECHO", TensorProto.STRING, ["batch", 2])
    graph = helper.make_graph([helper.make_node("Identity", ["TEXT"], ["ECHO"])], "echo", [text], [echo])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def batched_copy_of_simple(repository: Path, name: str, dynamic_batching: str) -> Path:
    """A copy of the example `simple` model under ``name``, with its own dynamic_batching section (YAML)."""
    shutil.copytree(repository / "simple" / "1", repository / name / "1")
    config = (repository / "simple" / "config.yaml").read_text() + "dynamic_batching:\n" + dynamic_batching
    return write_config(repository / name, config)


def deep_torchscript(path: Path, *, layers: int = 150, features: int = 16) -> Path:
    """A scripted stack of ``layers`` small Linear + tanh residual blocks on FP32 [batch, features].

    TorchScript's profiling executor records and then optimises the graph on a module's first two
    calls; with this many nodes those calls take some 50x a warm one, the slow start warmup removes.
    Write its config with input ``x`` and output ``y``.
    """
    import warnings

    import torch
    from torch import nn

    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(features, features) for _ in range(layers)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = torch.tanh(block(x)) + x * 0.5
            return x

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, yet served
        torch.jit.save(torch.jit.script(Deep().eval().requires_grad_(False)), str(path))
    return path


def deep_onnx(path: Path, *, layers: int = 300, features: int = 64) -> Path:
    """``layers`` MatMul + Tanh + Add residual blocks on FP32 [batch, features] (``x`` → ``y``):
    about a millisecond a call, in enough nodes that ONNX Runtime's first run plans its memory."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features])
    nodes, weights, current = [], [], "x"
    for i in range(layers):
        weight = rng.standard_normal((features, features)) * features**-0.5
        weights.append(onnx.numpy_helper.from_array(weight.astype(np.float32), f"w{i}"))
        out = "y" if i == layers - 1 else f"a{i}"
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]),
            helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]),
            helper.make_node("Add", [f"t{i}", current], [out]),
        ]
        current = out
    graph = helper.make_graph(nodes, "deep", [x], [y], initializer=weights)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def failing_onnx(path: Path, *, features: int = 64) -> Path:
    """FP32 [batch, features] in and out (``x`` → ``y``), as ``deep_onnx``'s, through a reshape to rows
    of 127 values: ONNX Runtime raises unless the batch holds a multiple of 127 rows, so a version built
    from it fails at runtime on every ordinary request."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features])
    rows = helper.make_tensor("rows", TensorProto.INT64, [2], [-1, 127])
    back = helper.make_tensor("back", TensorProto.INT64, [2], [-1, features])
    nodes = [helper.make_node("Reshape", ["x", "rows"], ["r"]), helper.make_node("Reshape", ["r", "back"], ["y"])]
    graph = helper.make_graph(nodes, "failing", [x], [y], initializer=[rows, back])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def resnet_onnx(path: Path, *, classes: int = 10, width: int = 8, seed: int = 0) -> Path:
    """A ResNet-18-like CNN, small: a convolution stem, two residual blocks (the second halves the image
    and doubles the channels through a 1x1 projection), global average pooling and a linear classifier,
    random weights from ``seed``. ``input`` FP32 [batch, 3, H, W] (any H, W) → ``logits`` FP32 [batch,
    classes], exported by torch.onnx and checked against torch."""
    import tempfile
    import warnings

    import onnxruntime as ort
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, inputs: int, outputs: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(outputs)
            self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(outputs)
            self.shortcut = (
                nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
                if stride != 1 or inputs != outputs
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            self.blocks = nn.Sequential(Block(width, width, 1), Block(width, 2 * width, 2))
            self.fc = nn.Linear(2 * width, classes)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            features = self.blocks(self.stem(image))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))

    torch.manual_seed(seed)
    model = ResNet()
    with torch.no_grad():  # running statistics of a trained network rather than BatchNorm's initial 0 and 1
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    model = model.eval().requires_grad_(False)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript-based exporter writes one self-contained file at once (as examples/build_models.py).
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exported = Path(scratch) / "model.onnx"
        torch.onnx.export(
            model,
            (torch.randn(2, 3, 16, 16),),
            exported,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
        )
        shutil.copyfile(exported, path)
    images = torch.randn(3, 3, 32, 32)
    (actual,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": images.numpy()})
    np.testing.assert_allclose(actual, model(images).numpy(), rtol=1e-4, atol=1e-5)
    return path


def simple_sequence_onnx(path: Path) -> Path:
    """Triton's example `simple_sequence` (docs/examples/model_repository): OUTPUT = (INPUT + START) * READY
    on INT32 [batch, 1], START and READY control inputs: what NVIDIA's sequence example clients expect."""
    tensors = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", 1]) for n in ("INPUT", "START", "READY")]
    output = helper.make_tensor_value_info("OUTPUT", TensorProto.INT32, ["batch", 1])
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT", "START"], ["sum"]), helper.make_node("Mul", ["sum", "READY"], ["OUTPUT"])],
        "simple_sequence",
        tensors,
        [output],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def accumulator_onnx(path: Path) -> Path:
    """A running sum kept as implicit state: OUTPUT = STATE_IN * (1 - START) + INPUT, also STATE_OUT, the next
    state; ID echoes the CORRID control (UINT64) as INT64. All INT32 [batch, 1] but CORRID."""
    names = ("INPUT", "START", "STATE_IN")
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", 1]) for n in names]
    inputs.append(helper.make_tensor_value_info("CORRID", TensorProto.UINT64, ["batch", 1]))
    outputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", 1]) for n in ("OUTPUT", "STATE_OUT")]
    outputs.append(helper.make_tensor_value_info("ID", TensorProto.INT64, ["batch", 1]))
    one = helper.make_tensor("one", TensorProto.INT32, [1], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["one", "START"], ["keep"]),
            helper.make_node("Mul", ["STATE_IN", "keep"], ["kept"]),
            helper.make_node("Add", ["kept", "INPUT"], ["OUTPUT"]),
            helper.make_node("Identity", ["OUTPUT"], ["STATE_OUT"]),
            helper.make_node("Cast", ["CORRID"], ["ID"], to=TensorProto.INT64),
        ],
        "accumulator",
        inputs,
        outputs,
        initializer=[one],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


ACCUMULATOR_PBTXT = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
sequence_batching {{
  max_sequence_idle_microseconds: {idle_us}
  {strategy}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }} ] }}
  ]
  state [
    {{ input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [ 1 ] }}
  ]
}}
input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }}, {{ name: "ID" data_type: TYPE_INT64 dims: [ 1 ] }} ]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
"""


def accumulator_model(
    repository: Path,
    name: str,
    *,
    strategy: str = "direct { }",
    max_batch_size: int = 4,
    idle_us: int = 10_000_000,
    instances: int = 1,
) -> Path:
    """An accumulator model folder (config.pbtxt and 1/model.onnx) in ``repository``."""
    folder = repository / name
    accumulator_onnx(folder / "1" / "model.onnx")
    text = ACCUMULATOR_PBTXT.format(
        name=name, strategy=strategy, max_batch_size=max_batch_size, idle_us=idle_us, instances=instances
    )
    (folder / "config.pbtxt").write_text(text)
    return folder
