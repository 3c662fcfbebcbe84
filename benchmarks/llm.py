"""Generation speed in one run: raw `transformers` generate() in-process, modelserve (float32 and int8)
and `transformers serve` (the library's own OpenAI server, continuous batching on), on the same model.

    .venv/bin/python -m benchmarks.llm [--sizes tiny 100m] [--tokens 64] [--streams 1 8 32] [--rounds 3]
                                       [--accuracy-prompts 16] [--no-transformers-serve]
                                       [--json PATH] [--plot PATH]

Each size is a random Llama built as examples/build_llm.py builds its tiny one (the same function and
tokenizer, in a temporary folder): ``tiny`` (2 layers, hidden 64: a token costs about a millisecond,
so the servers' own overhead shows; the default, a minute or two) and ``100m`` (10 layers, hidden
1024, 95M parameters: the CPU is the bottleneck; 10 to 15 minutes on a busy 2-core host). For each
size:

- accuracy against float32, on ``--accuracy-prompts`` prompts: the model the CPU engine builds for
  ``quantization: int8`` (taken from the engine, so the quantization served), and for scale the one
  it builds for ``dtype: bfloat16``, which only rounds the weights (random weights make greedy text
  fragile: a small change in the logits changes it). Reported: greedy continuations identical,
  their common prefix, next-token agreement on float32's text, first-step logit error;
- three servers started side by side, each as its users start it: `modelserve serve` with its
  defaults on a repository of the model (``max_num_seqs`` at the largest stream count,
  ``max_model_len`` 512), the same with ``quantization: int8``, and `transformers serve FOLDER
  --continuous-batching --device cpu` with its paged cache sized to hold what modelserve's may and
  modelserve's prefill budget (512 tokens a step): left to itself it takes 60% of the host's RAM for
  that cache (benchmarks/llm_servers.py). Once ready and settled, each one's idle memory (RSS and PSS
  of its process and children; again after the run, as weights mapped from the safetensors file
  count only once read);
- at each of ``--streams``, ``--rounds`` rounds in which raw generate() and the servers take turns
  (each round starting with the next), so that a slow spell of the shared host falls on all of
  them: generate() in this process on a static batch of that many copies of the prompt, timed token
  by token through a streamer (the loop waits meanwhile; no stream is running), then as many
  concurrent streaming clients of each server's `/v1/completions`. Every sequence has ``--tokens``
  output tokens, greedy, EOS ignored (min_new_tokens; modelserve's ``ignore_eos``; `transformers
  serve`'s ``generation_config`` with ``eos_token_id: -1``); a server's tokens are those its usage
  chunk counts. A warm-up round at each concurrency is not measured.

Every process keeps torch's default intra-op threads (the host's cores) unless ``--torch-threads``
sets them (OMP_NUM_THREADS for the servers): on a busy host, threads that wait for one another at
every operation make float32 runs slow and erratic, and one thread each gives steadier comparisons.

Reported per size: output tokens/s, time to first token and inter-token latency (p50, p99; ITL is
each stream's mean time a token after its first, so a server that sends two tokens in a chunk is not
favoured, benchmarks/llm_timing.py; a static batch's are its steps'), the 99th percentile wait
between chunks, tokens/s over raw batch-1 generate()'s and over `transformers serve`'s at the same
concurrency, idle memory and the accuracy figures; then a verdict on each of the issue's targets for
float32 modelserve (at 32 streams, tokens/s at least 2x `transformers serve`'s and 3x raw batch-1
generate()'s; at 1 stream, TTFT p50 within 1.2x raw generate()'s first token and ITL p50 within
1.1x raw's). Client, servers and generate() share the host's cores; on a small shared host the
figures move from run to run, so compare within a run. ``--json`` writes every row; ``--plot`` a
PNG (it needs matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from types import ModuleType

import aiohttp
import torch

from benchmarks.llm_inprocess import RAW, VARIANTS, Agreement, RawGenerate, agreement
from benchmarks.llm_report import Verdict, plot, print_table, print_verdicts, verdicts, write_json
from benchmarks.llm_servers import (
    MODELSERVE,
    MODELSERVE_INT8,
    Endpoint,
    Memory,
    idle_memory,
    modelserve,
    modelserve_repository,
    stream_round,
    transformers_serve,
)
from benchmarks.llm_timing import Point, Timing, summarize

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"tiny": (2, 64), "100m": (10, 1024)}  # layers, hidden size
MAX_MODEL_LEN = 512


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_llm", ROOT / "examples" / "build_llm.py")
    assert spec is not None
    assert spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    return builder


def build_model(size: str, folder: Path) -> tuple[Path, str]:
    """The model of ``size`` in ``folder``, and a line describing it."""
    from safetensors import safe_open

    layers, hidden = SIZES[size]
    built: Path = _builder().tiny_llama(folder, layers=layers, hidden=hidden)
    with safe_open(str(built / "model.safetensors"), "pt") as weights:
        names = weights.keys()  # a safetensors file, not a dict: it has no iterator of its own
        count = sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    return built, f"random Llama, {layers} layers, hidden {hidden}, {count / 1e6:.1f}M parameters"


def prompts(count: int) -> list[str]:
    """``count`` different prompts of six words, from the text the tokenizer was trained on."""
    words = _builder().TEXT.split()
    return [" ".join(words[(3 * i) % (len(words) - 6) :][:6]) for i in range(count)]


def serve_all(
    stack: ExitStack, folder: Path, work: Path, args: argparse.Namespace
) -> tuple[list[Endpoint], str | None]:
    """The servers of one size, each stopped when ``stack`` closes, and why `transformers serve` is
    missing where it is."""
    seqs = max(args.streams)
    threads = {"OMP_NUM_THREADS": str(args.torch_threads)} if args.torch_threads else {}
    endpoints = []
    for system, int8 in ((MODELSERVE, False), (MODELSERVE_INT8, True)):
        repository = modelserve_repository(folder, work / system.replace(" ", "-"), seqs, MAX_MODEL_LEN, int8)
        endpoints.append(stack.enter_context(modelserve(system, repository, threads)))
    if args.no_transformers_serve:
        return endpoints, "--no-transformers-serve"
    try:
        log = work / "tf-serve.log"
        endpoints.append(stack.enter_context(transformers_serve(folder, seqs, MAX_MODEL_LEN, log, threads)))
    except (SystemExit, subprocess.CalledProcessError) as exc:  # not ready, or accelerate not installable
        return endpoints, str(exc)
    return endpoints, None


async def measure(size: str, raw: RawGenerate, endpoints: list[Endpoint], args: argparse.Namespace) -> list[Point]:
    """raw generate() and each server at each number of concurrent streams, ``--rounds`` times. They
    take turns round by round, each round starting with the next, so a slow spell of the shared host
    falls on all of them, not on one."""
    timings: dict[tuple[str, int], list[Timing]] = {}
    elapsed: dict[tuple[str, int], float] = {}
    # Idle connections are dropped well within uvicorn's 5 s keep-alive, so that a round never picks one
    # its server is closing (aiohttp does not retry a POST on it); a new connection costs a fraction of a ms.
    connector = aiohttp.TCPConnector(limit=max(args.streams), keepalive_timeout=1.0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:

        async def in_process(count: int, tokens: int) -> list[Timing]:
            return raw.round(count, tokens)  # blocks the loop: no stream is running meanwhile

        runs: dict[str, Callable[[int, int], Awaitable[list[Timing]]]] = {RAW: in_process}
        runs |= {endpoint.system: partial(stream_round, client, endpoint) for endpoint in endpoints}
        for count in args.streams:
            for run in runs.values():  # what each pays once at a concurrency is not measured
                await run(count, 4)
            for turn in range(args.rounds):
                order = list(runs.items())
                for system, run in order[turn % len(order) :] + order[: turn % len(order)]:
                    started = time.perf_counter()
                    done = await run(count, args.tokens)
                    elapsed[system, count] = elapsed.get((system, count), 0.0) + time.perf_counter() - started
                    timings.setdefault((system, count), []).extend(done)
    expected = args.rounds * args.tokens
    return [
        summarize(size, s, count, elapsed[s, count], found, expected * count) for (s, count), found in timings.items()
    ]


def main() -> None:
    """Run every size, then print the tables and the targets, and write what was asked for."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["tiny"], help="models to run")
    parser.add_argument("--tokens", type=int, default=64, help="output tokens per request")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32], help="concurrent streaming clients")
    parser.add_argument("--rounds", type=int, default=3, help="times each measurement is repeated")
    parser.add_argument("--accuracy-prompts", type=int, default=16, help="prompts accuracy is measured on")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before memory is read")
    parser.add_argument(
        "--torch-threads", type=int, help="torch's intra-op threads in every process (default: each one's own)"
    )
    parser.add_argument("--no-transformers-serve", action="store_true", help="leave `transformers serve` out")
    parser.add_argument("--json", type=Path, help="write every row, idle memory, accuracy and targets here")
    parser.add_argument("--plot", type=Path, help="write a PNG of tokens/s, TTFT and ITL here (needs matplotlib)")
    args = parser.parse_args()
    if args.tokens < 2:
        parser.error("--tokens must be at least 2: inter-token latency needs two tokens")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib, which is not installed: pip install matplotlib")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    points: list[Point] = []
    memory: list[Memory] = []
    accuracy: dict[str, list[Agreement]] = {}
    described: dict[str, str] = {}
    missing: dict[str, str] = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="modelserve-llm-") as scratch:
            work = Path(scratch)
            folder, described[size] = build_model(size, work / "model")
            print(f"{size}: {described[size]}; accuracy against float32...", flush=True)
            accuracy[size] = [agreement(folder, prompts(args.accuracy_prompts), args.tokens, v) for v in VARIANTS]
            with ExitStack() as stack:
                endpoints, why = serve_all(stack, folder, work, args)
                if why is not None:
                    missing[size] = why
                time.sleep(args.settle)
                memory += [idle_memory(size, endpoint, "loaded") for endpoint in endpoints]
                print(f"{size}: {RAW} and streams from {', '.join(e.system for e in endpoints)}...", flush=True)
                points += asyncio.run(measure(size, RawGenerate(folder), endpoints, args))
                time.sleep(args.settle)
                memory += [idle_memory(size, endpoint, "after the run") for endpoint in endpoints]

    threads = f"{args.torch_threads} torch threads" if args.torch_threads else "torch's default threads"
    print(f"\n{args.tokens} output tokens a request, greedy; {args.rounds} rounds; {threads}; nearest-rank p50, p99")
    for size in args.sizes:
        print_table(size, described[size], points, memory, accuracy[size])
        if size in missing:
            print(f"transformers serve not measured: {missing[size]}")
    found: list[Verdict] = [v for size in args.sizes for v in verdicts(size, points)]
    print_verdicts(found)
    if args.json:
        names = ("sizes", "tokens", "streams", "rounds", "accuracy_prompts", "torch_threads")
        settings = {k: vars(args)[k] for k in names}
        write_json(args.json, settings, points, memory, accuracy, found)
        print(f"rows: {args.json}")
    if args.plot:
        plot(args.plot, args.sizes, points)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
