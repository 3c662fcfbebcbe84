"""Throughput with the response cache on and off, when most requests repeat one answered before.

    .venv/bin/python -m benchmarks.response_cache [--model mlp|resnet18] [--clients 32] [--repeat 0.9]
        [--runs 3] [--duration 5]

One server holds two copies of the model, one whose config.yaml enables the response cache and one
that does not; closed-loop clients send binary-tensor HTTP requests (tritonclient's encoding), of which
``--repeat`` are drawn from a few hot requests and the rest are new every time, first to one copy
and then to the other, ``--runs`` times, alternating. Prints the medians of inferences per second
and p50/p99 latency, and the ratio of cache on to off, with the hit ratio the server counted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.models import build_examples, repository_for
from benchmarks.serving import start_server
from modelserve.bench.loadgen import HttpTarget, LoadResult, Send, run_load

HOT = 16  # distinct requests the repeated share is drawn from


class MixedTarget:
    """Pre-encoded requests, sent in a fixed shuffled order: repeats of a few hot ones and fresh ones."""

    def __init__(self, requests: list[bytes], host: str, port: int) -> None:
        self.requests, self.host, self.port = requests, host, port
        self._position = 0

    def _take(self) -> bytes:
        request = self.requests[self._position % len(self.requests)]
        self._position += 1
        return request

    async def session(self) -> tuple[Send, Callable[[], Awaitable[None]]]:
        reader, writer = await asyncio.open_connection(self.host, self.port)

        async def send() -> bool:
            writer.write(self._take())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:")
            await reader.readexactly(length)
            return head[9:12] == b"200"

        async def close() -> None:
            writer.close()
            await writer.wait_closed()

        return send, close


def encoded(url: str, model: str, inputs: dict[str, np.ndarray]) -> bytes:
    """The HTTP request tritonclient's binary extension sends for ``inputs``."""
    items = []
    for name, array in inputs.items():
        item = httpclient.InferInput(name, list(array.shape), "FP32")
        item.set_data_from_numpy(array, binary_data=True)
        items.append(item)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(items)
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_size)}
    return HttpTarget(url, f"/v2/models/{model}/infer", body, headers).request


def workload(url: str, model: str, metadata: dict[str, Any], repeat: float, count: int, seed: int) -> list[bytes]:
    """``count`` requests in the order they are sent: ``repeat`` of them hot, the rest each new."""
    rng = random.Random(seed)
    generator = np.random.default_rng(seed)
    shapes = {t["name"]: [1 if d == -1 else d for d in t["shape"]] for t in metadata["inputs"]}

    def fresh() -> bytes:
        return encoded(url, model, {n: generator.standard_normal(s).astype(np.float32) for n, s in shapes.items()})

    hot = [fresh() for _ in range(HOT)]
    return [rng.choice(hot) if rng.random() < repeat else fresh() for _ in range(count)]


def hit_ratio(url: str, model: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    counts = {"hit": 0.0, "miss": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "model_serving_response_cache_lookups_total" and sample.labels["model"] == model:
                counts[sample.labels["result"]] += sample.value
    total = counts["hit"] + counts["miss"]
    return counts["hit"] / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mlp", choices=["mlp", "resnet18"])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--repeat", type=float, default=0.9)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=0, help="requests encoded per copy (0: by model)")
    args = parser.parse_args()
    build_examples()
    source = repository_for(args.model) / args.model
    count = args.requests or (60_000 if args.model == "mlp" else 600)
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as folder:
        repository = Path(folder)
        for name, enable in ((f"{args.model}_cached", True), (args.model, False)):
            (repository / name / "1").mkdir(parents=True)
            (repository / name / "1" / "model.onnx").symlink_to(source / "1" / "model.onnx")
            (repository / name / "config.yaml").write_text(f"response_cache:\n  enable: {str(enable).lower()}\n")
        process, url, _ = start_server(repository, 1)
        try:
            host, port = url.removeprefix("http://").split(":")
            metadata = httpx.get(f"{url}/v2/models/{args.model}").raise_for_status().json()
            results: dict[str, list[LoadResult]] = {"on": [], "off": []}
            for run in range(args.runs):
                for label, model in (("on", f"{args.model}_cached"), ("off", args.model)):
                    requests = workload(url, model, metadata, args.repeat, count, seed=run)
                    target = MixedTarget(requests, host, int(port))
                    load = run_load(target, args.clients, args.duration, max_requests=count)
                    results[label].append(asyncio.run(load))
            ratio = hit_ratio(url, f"{args.model}_cached")
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"\n{args.model}, {args.clients} clients, {args.repeat:.0%} repeated requests, medians of {args.runs} runs")
    print("| response cache | inf/s | p50 ms | p99 ms |\n|---|---|---|---|")
    medians = {}
    for label, runs in results.items():
        medians[label] = statistics.median(r.inferences_per_second for r in runs)
        p50 = statistics.median(r.percentile_ms(50) for r in runs)
        p99 = statistics.median(r.percentile_ms(99) for r in runs)
        print(f"| {label} | {medians[label]:,.0f} | {p50:.3f} | {p99:.3f} |")
    print(f"\ncache on / off: {medians['on'] / medians['off']:.2f}x; hit ratio counted by the server: {ratio:.3f}")


if __name__ == "__main__":
    main()
