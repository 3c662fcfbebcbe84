"""A high-priority client's latency while a crowd of low-priority clients floods the same model.

    .venv/bin/python -m benchmarks.priority [--model deep|mlp|resnet18] [--flood 32] [--runs 3] [--duration 5]
                                            [--flood-nice 19]

One server holds the model with two priority levels (dynamic_batching.priority_levels: 2). The default
model, ``deep``, is 32 ReLU layers of 384 x 384 on 384 floats: its requests are 1.5 KB but each sample
costs some 5 MFLOP, so a flood of them queues at the model, where priorities act, rather than in the
HTTP layer, which serves requests in arrival order (ResNet-18's 600 KB bodies saturate it first). Each run
measures one closed-loop client sending priority 1 alone (idle), then the same client beside
``--flood`` clients sending priority 2, and then, for comparison, the same flood with every client at
the same level. The flood runs in a process of its own; with ``--flood-nice 19`` that process runs at the
lowest CPU priority, standing in for clients on other machines (on 2 cores its 32 HTTP clients
otherwise take a core from the server they measure). Prints the medians of p50 and p99 for the
high-priority client, the ratio to its idle latency (the target: within 2x), and the flood's requests
per second (what the levels below the top give up for it).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
from dataclasses import dataclass
from multiprocessing import Queue
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.http as httpclient

from benchmarks.models import build_examples, repository_for
from benchmarks.serving import start_server
from modelserve.bench.loadgen import HttpTarget, LoadResult, run_load


def deep_onnx(path: Path, layers: int = 32, width: int = 384) -> Path:
    """The ``deep`` model: ``layers`` of MatMul and ReLU on FP32 [batch, width], input x, output y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, current = [], [], "x"
    for i in range(layers):
        weights.append(
            numpy_helper.from_array((rng.standard_normal((width, width)) / width**0.5).astype(np.float32), f"w{i}")
        )
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]))
        current = f"r{i}" if i < layers - 1 else "y"
        nodes.append(helper.make_node("Relu", [f"m{i}"], [current]))
    graph = helper.make_graph(
        nodes,
        "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def target(url: str, model: str, metadata: dict[str, Any], priority: int) -> HttpTarget:
    """tritonclient's binary-tensor request for ``model`` at ``priority``."""
    items = []
    for tensor in metadata["inputs"]:
        shape = [1 if d == -1 else d for d in tensor["shape"]]
        item = httpclient.InferInput(tensor["name"], shape, "FP32")
        item.set_data_from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32), binary_data=True)
        items.append(item)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(items, priority=priority)
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_size)}
    return HttpTarget(url, f"/v2/models/{model}/infer", body, headers)


def flooding(low: HttpTarget, flood: int, duration: float, nice: int, answered: Queue[float]) -> None:
    """Run in a process of its own, so that the flood's clients do not delay the measured one's; puts
    the flood's requests per second in ``answered``."""
    os.nice(nice)
    answered.put(asyncio.run(run_load(low, flood, duration, warmup_s=0.0)).requests_per_second)


@dataclass
class Measured:
    """The measured client's result, and the flood's requests per second beside it (0: no flood)."""

    client: LoadResult
    flood_rps: float = 0.0


def measured(high: HttpTarget, low: HttpTarget | None, flood: int, duration: float, nice: int = 0) -> Measured:
    """The high-priority client's result, with ``flood`` clients of ``low`` at ``nice`` beside it (None: alone)."""
    if low is None:
        return Measured(asyncio.run(run_load(high, 1, duration, warmup_s=1.5)))
    context = multiprocessing.get_context("spawn")
    answered: Queue[float] = context.Queue()
    crowd = context.Process(target=flooding, args=(low, flood, duration + 2, nice, answered))
    crowd.start()
    try:
        client = asyncio.run(run_load(high, 1, duration, warmup_s=1.5))
        return Measured(client, answered.get(timeout=60))
    finally:
        crowd.join(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deep", choices=["deep", "mlp", "resnet18"])
    parser.add_argument("--flood", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--flood-nice", type=int, default=0, help="the flood process's nice value (0-19)")
    args = parser.parse_args()
    build_examples()
    with tempfile.TemporaryDirectory(prefix="priority-bench-") as folder:
        (Path(folder) / args.model / "1").mkdir(parents=True)
        if args.model == "deep":
            deep_onnx(Path(folder) / "deep" / "1" / "model.onnx")
        else:
            (Path(folder) / args.model / "1" / "model.onnx").symlink_to(
                repository_for(args.model) / args.model / "1" / "model.onnx"
            )
        (Path(folder) / args.model / "config.yaml").write_text("dynamic_batching:\n  priority_levels: 2\n")
        process, url, _ = start_server(Path(folder), 1)
        try:
            metadata = httpx.get(f"{url}/v2/models/{args.model}").raise_for_status().json()
            high, low = target(url, args.model, metadata, 1), target(url, args.model, metadata, 2)
            same = target(url, args.model, metadata, 1)
            rows: dict[str, list[Measured]] = {"idle": [], "flooded, high priority": [], "flooded, same level": []}
            measured(high, same, args.flood, args.duration)  # unmeasured: the model meets every batch size once
            for _ in range(args.runs):
                rows["idle"].append(measured(high, None, 0, args.duration))
                rows["flooded, high priority"].append(measured(high, low, args.flood, args.duration, args.flood_nice))
                rows["flooded, same level"].append(measured(high, same, args.flood, args.duration, args.flood_nice))
        finally:
            process.terminate()
            process.wait(timeout=30)
    idle = statistics.median(r.client.percentile_ms(50) for r in rows["idle"])
    print(
        f"\n{args.model}: one client at priority 1, {args.flood} flooding clients at nice {args.flood_nice}, "
        f"medians of {args.runs} runs"
    )
    print("| the client | p50 ms | p99 ms | p50 / idle p50 | the flood's req/s |\n|---|---|---|---|---|")
    for label, results in rows.items():
        p50 = statistics.median(r.client.percentile_ms(50) for r in results)
        p99 = statistics.median(r.client.percentile_ms(99) for r in results)
        flood_rps = statistics.median(r.flood_rps for r in results)
        print(f"| {label} | {p50:.3f} | {p99:.3f} | {p50 / idle:.2f} | {flood_rps:.0f} |")


if __name__ == "__main__":
    main()
