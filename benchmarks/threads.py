"""ONNX Runtime's intra-op threads against concurrent callers, in-process: what the defaults are chosen from.

    .venv/bin/python -m benchmarks.threads [--runs 5] [--seconds 2] [--model mlp resnet18] [--batch 1 8]

For each model and batch size, one session per intra_op_num_threads in {1, 2, the CPUs this process may
use} is called by 1 or 2 threads at once, back to back (as a model's ``instance_count`` batches run on
the inference threads), and the samples per second of all callers together are counted. The
configurations take turns within each run, so a burst of other work on the machine spreads over all of
them; the median of the runs is printed with the least and the most. Beside it, the CPU time the
process spent per sample: steadier than the wall clock when other work competes for the cores, and it
shows what threads waiting for work (ONNX Runtime's spin) cost the other models of a server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.models import build_examples, repository_for
from modelserve.cpus import available_cpus

_DTYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


def session(model: Path, intra_op: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def feeds(sess: ort.InferenceSession, batch: int) -> dict[str, np.ndarray[Any, Any]]:
    """Random inputs of ``batch`` samples, the other open dimensions at 1."""
    rng = np.random.default_rng(0)
    return {
        node.name: rng.standard_normal([batch, *(d if isinstance(d, int) else 1 for d in node.shape[1:])]).astype(
            _DTYPES[node.type]
        )
        for node in sess.get_inputs()
    }


def throughput(
    sess: ort.InferenceSession, feed: dict[str, np.ndarray[Any, Any]], callers: int, seconds: float
) -> tuple[float, float]:
    """Samples per second of ``callers`` threads calling ``run`` back to back for ``seconds``, and the
    process's CPU seconds per sample."""
    calls = [0] * callers
    start = threading.Barrier(callers + 1)
    deadline = 0.0

    def call(index: int) -> None:
        start.wait()
        while time.perf_counter() < deadline:
            sess.run(None, feed)
            calls[index] += 1

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    began, cpu = time.perf_counter(), time.process_time()
    deadline = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    samples = sum(calls) * len(next(iter(feed.values())))
    return samples / (time.perf_counter() - began), (time.process_time() - cpu) / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each measurement")
    parser.add_argument("--model", nargs="+", default=["mlp", "resnet18"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    args = parser.parse_args()
    build_examples()
    cpus = available_cpus()
    intra_ops = sorted({1, 2, cpus})
    print(
        f"{cpus} CPUs available to this process, load average {os.getloadavg()[0]:.1f}; samples/s, median "
        f"of {args.runs} (least to most), CPU ms per sample"
    )
    for model in args.model:
        path = repository_for(model) / model / "1" / "model.onnx"
        sessions = {intra: session(path, intra) for intra in intra_ops}
        for batch in args.batch:
            configs = [(intra, callers) for intra in intra_ops for callers in (1, 2)]
            feed = feeds(sessions[1], batch)
            for intra in intra_ops:  # first calls plan buffers and grow arenas: keep them out of the figures
                throughput(sessions[intra], feed, 2, min(args.seconds, 0.5))
            results: dict[tuple[int, int], list[tuple[float, float]]] = {config: [] for config in configs}
            for _ in range(args.runs):
                for intra, callers in configs:
                    results[intra, callers].append(throughput(sessions[intra], feed, callers, args.seconds))
            for (intra, callers), samples in results.items():
                rates = [rate for rate, _ in samples]
                print(
                    f"{model:9s} batch {batch:3d}  intra_op {intra}  callers {callers}: "
                    f"{statistics.median(rates):10.1f}  ({min(rates):.1f} to {max(rates):.1f})  "
                    f"{statistics.median(cpu for _, cpu in samples) * 1000:8.3f} ms CPU"
                )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
