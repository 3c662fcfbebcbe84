"""Generation speed: raw `transformers` generate() in-process beside modelserve's OpenAI route, one run.

    .venv/bin/python -m benchmarks.llm [--tokens 64] [--streams 1 8 32] [--rounds 3]

The model is examples/build_llm.py's tiny Llama (built in a temporary folder). Raw generate() runs at
batch 1 and as a static batch of each stream count; modelserve serves the same folder with
``max_num_seqs`` at the largest stream count, and that many streaming clients each ask for ``--tokens``
tokens (``ignore_eos``, greedy) at once, ``--rounds`` times. Reported: output tokens/s, time to first
token and inter-token latency (p50, p99), and modelserve's tokens/s over raw batch-1 generate()'s.
`transformers serve` is not compared yet.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.serving import start_server

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Hello, world! How are"


def build_model(repository: Path, max_num_seqs: int) -> Path:
    spec = importlib.util.spec_from_file_location("build_llm", ROOT / "examples" / "build_llm.py")
    assert spec is not None
    assert spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    folder: Path = builder.tiny_llama(repository / "tiny-llm" / "1")
    config = f"platform: llm\nllm:\n  max_model_len: 512\n  max_num_seqs: {max_num_seqs}\n"
    (repository / "tiny-llm" / "config.yaml").write_text(config)
    return folder


def raw(folder: Path, tokens: int, batches: list[int], rounds: int) -> dict[str, dict[str, float]]:
    """generate() in this process: tokens/s per batch size; first token and per-token time at batch 1."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([AutoTokenizer.from_pretrained(folder)(PROMPT)["input_ids"]])
    model.generate(ids, max_new_tokens=4, do_sample=False)
    results: dict[str, dict[str, float]] = {}
    firsts = []
    for _ in range(rounds):
        started = time.perf_counter()
        model.generate(ids, max_new_tokens=1, do_sample=False)
        firsts.append(time.perf_counter() - started)
    for batch in sorted({1, *batches}):
        started = time.perf_counter()
        for _ in range(rounds):
            model.generate(ids.repeat(batch, 1), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        elapsed = time.perf_counter() - started
        figures = {"tokens_s": rounds * batch * tokens / elapsed}
        if batch == 1:
            ttft = statistics.median(firsts)
            itl = (elapsed / rounds - ttft) / (tokens - 1)
            figures |= {"ttft_p50": ttft, "ttft_p99": max(firsts), "itl_p50": itl, "itl_p99": itl}
        results[f"raw generate() batch {batch}"] = figures
    return results


async def stream(client: httpx.AsyncClient, url: str, tokens: int) -> tuple[float, list[float]]:
    """One streamed completion: its time to first token and the gaps between its chunks."""
    body = {"model": "tiny-llm", "prompt": PROMPT, "max_tokens": tokens, "ignore_eos": True, "temperature": 0}
    started = time.perf_counter()
    arrivals = []
    async with client.stream("POST", f"{url}/v1/completions", json=body | {"stream": True}) as answer:
        async for line in answer.aiter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.perf_counter())
    return arrivals[0] - started, [b - a for a, b in itertools.pairwise(arrivals)]


async def served(url: str, tokens: int, streams: list[int], rounds: int) -> dict[str, dict[str, float]]:
    results = {}
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=max(streams))) as client:
        await stream(client, url, 4)
        for count in streams:
            firsts: list[float] = []
            gaps: list[float] = []
            started = time.perf_counter()
            for _ in range(rounds):
                for first, between in await asyncio.gather(*(stream(client, url, tokens) for _ in range(count))):
                    firsts.append(first)
                    gaps.extend(between)
            elapsed = time.perf_counter() - started
            results[f"modelserve, {count} streams"] = {
                "tokens_s": rounds * count * tokens / elapsed,
                "ttft_p50": _quantile(firsts, 0.5),
                "ttft_p99": _quantile(firsts, 0.99),
                "itl_p50": _quantile(gaps, 0.5),
                "itl_p99": _quantile(gaps, 0.99),
            }
    return results


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32], help="concurrent streaming clients")
    parser.add_argument("--rounds", type=int, default=3, help="times each measurement is repeated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        repository = Path(folder) / "model_repository"
        model = build_model(repository, max(args.streams))
        rows = raw(model, args.tokens, args.streams, args.rounds)
        process, url, _ = start_server(repository, 1)
        try:
            rows |= asyncio.run(served(url, args.tokens, args.streams, args.rounds))
        finally:
            process.terminate()
            process.wait(30)
    baseline = rows["raw generate() batch 1"]["tokens_s"]
    print(f"{'':32} {'tokens/s':>9} {'vs raw b1':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>9} {'ITL p99':>9}")
    for name, figures in rows.items():
        times = [f"{figures[k] * 1000:8.1f}ms" if k in figures else f"{'':>9}" for k in _TIMES]
        print(f"{name:32} {figures['tokens_s']:9.0f} {figures['tokens_s'] / baseline:9.2f} {' '.join(times)}")


_TIMES = ("ttft_p50", "ttft_p99", "itl_p50", "itl_p99")


if __name__ == "__main__":
    main()
