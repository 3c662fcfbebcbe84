"""Models the benchmarks need beyond the examples: ResNet-18 (FP32, 3x224x224 → 1000), built locally.

torchvision has no CPU build here, so the architecture is written out (the standard ResNet-18: a 7x7
stem, four stages of two BasicBlocks, 64-128-256-512 channels); the weights are random from a fixed
seed, which costs the same to run as trained ones. Built once into .bench/repository.
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "model_repository"
BENCH_REPOSITORY = ROOT / ".bench" / "repository"


def build_examples() -> None:
    """The example repository's models, built by examples/build_models.py where they are missing."""
    builder = importlib.util.spec_from_file_location("build_models", ROOT / "examples" / "build_models.py")
    assert builder is not None
    assert builder.loader is not None
    module = importlib.util.module_from_spec(builder)
    builder.loader.exec_module(module)
    module.build(EXAMPLES)


def repository_for(model: str) -> Path:
    """The repository that holds ``model``: the examples, or the benchmark repository for ResNet-18."""
    if model != "resnet18":
        return EXAMPLES
    target = BENCH_REPOSITORY / "resnet18" / "1" / "model.onnx"
    if not target.exists():
        export_resnet18(target)
    return BENCH_REPOSITORY


def export_resnet18(path: Path) -> None:
    """ResNet-18 (FP32, batch x 3 x 224 x 224 → batch x 1000, random weights from a fixed seed) as ONNX at
    ``path``; tests/models/test_budget_footprint.py uses it too."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inputs: int, outputs: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(outputs)
            self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(outputs)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = (
                nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
                if stride != 1 or inputs != outputs
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(y)) + self.downsample(x))

    def stage(inputs: int, outputs: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(inputs, outputs, stride), BasicBlock(outputs, outputs, 1))

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
        stage(64, 64, 1),
        stage(64, 128, 2),
        stage(128, 256, 2),
        stage(256, 512, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(512, 1000),
    ).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 224, 224),),
            str(partial),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    shutil.move(partial, path)
