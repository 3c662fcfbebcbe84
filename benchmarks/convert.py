"""What `modelserve convert` gains and costs: FP16 and INT8 against FP32 for ResNet-18 and the example MLP.

    .venv/bin/python -m benchmarks.convert [--runs 3] [--speed-runs 30]

Each conversion runs `modelserve convert <fp32 model.onnx> --output ... --json` ``--runs`` times; the
table shows the medians of its report: speed-up of a batch-1 call in ONNX Runtime on this machine
against the FP32 ONNX model, max abs error and top-1 agreement against the FP32 model on the sample
inputs (random normal; for static INT8, the last 16 of its 64 random calibration samples, which
`modelserve convert` keeps out of calibration). ResNet-18 has random weights from a fixed seed
(benchmarks/models.py); the MLP is examples/build_models.py's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.models import build_examples, repository_for

CASES = (
    ("fp16", []),
    ("int8", []),  # dynamic
    ("int8", ["--calibration-data", "{calibration}"]),  # static
)


def run(model: Path, precision: str, extra: list[str], speed_runs: int, scratch: Path) -> dict[str, object]:
    """One conversion's report."""
    command = [sys.executable, "-m", "modelserve", "convert", str(model), "--output", str(scratch / "out.onnx"),
               "--precision", precision, "--speed-runs", str(speed_runs), "--force", "--json", *extra]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    report: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return report


def main() -> None:
    """Measure every case for both models and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--speed-runs", type=int, default=30)
    args = parser.parse_args()
    build_examples()
    models = {
        "ResNet-18": (repository_for("resnet18") / "resnet18" / "1" / "model.onnx", (3, 224, 224)),
        "MLP": (repository_for("mlp") / "mlp" / "1" / "model.onnx", (16,)),
    }
    print("| model | precision | speed-up (batch 1) | FP32 ms | converted ms | max abs error | top-1 agreement |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        for label, (model, shape) in models.items():
            calibration = scratch / f"{model.parent.parent.name}.npz"
            np.savez(calibration, input=np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32))
            for precision, extra in CASES:
                options = [arg.format(calibration=calibration) for arg in extra]
                reports = [run(model, precision, options, args.speed_runs, scratch) for _ in range(args.runs)]
                kind = "" if precision != "int8" else (" static" if extra else " dynamic")
                outputs = [r["outputs"][0] for r in reports]  # type: ignore[index]
                top1 = [o["top1_agreement"] for o in outputs if o["top1_agreement"] is not None]
                print(
                    f"| {label} | {precision}{kind} | {statistics.median(r['speedup'] for r in reports):.2f}x "  # type: ignore[misc]
                    f"| {statistics.median(r['baseline_ms'] for r in reports):.3f} "  # type: ignore[misc]
                    f"| {statistics.median(r['converted_ms'] for r in reports):.3f} "  # type: ignore[misc]
                    f"| {statistics.median(r['max_abs_error'] for r in reports):.3g} "  # type: ignore[misc]
                    f"| {statistics.median(top1):.1%} |"
                    if top1
                    else "| - |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
