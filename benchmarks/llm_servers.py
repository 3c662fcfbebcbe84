"""The servers benchmarks/llm.py streams from, started as their users start them, and its streaming clients.

The clients use aiohttp, as vLLM's serving benchmark does: its HTTP parsing is compiled, where httpx's
(h11) is Python and cost the client, which shares the host with the servers, more CPU per streamed token
than either server under test spent.

modelserve serves a repository of one generative model (float32, or ``quantization: int8``). `transformers
serve` is the library's own OpenAI server, run with continuous batching on the same folder. It needs
`accelerate` (its `serving` extra), which modelserve does not: where this venv lacks it, it is installed
once into `.bench/accelerate` without its dependencies (torch and the rest are this venv's, so both
servers run the same torch) and put on the server's PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks.llm_inprocess import PROMPT
from benchmarks.llm_timing import Timing
from benchmarks.serving import start_server
from benchmarks.startup import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = ROOT / ".bench" / "accelerate"
MODEL = "llm"
MODELSERVE = "modelserve"
MODELSERVE_INT8 = "modelserve int8"
TRANSFORMERS_SERVE = "transformers serve"
PAGE_TOKENS = 256  # tokens a page of transformers' paged cache holds (ContinuousBatchingConfig.page_size)
BATCHED_TOKENS = 512  # prompt tokens per step: modelserve's max_num_batched_tokens default, given to both


@dataclass(frozen=True)
class Endpoint:
    """A running server: where to stream from, what its requests add to the prompt (its model's name,
    how it is told to ignore EOS so every answer has the same length) and its process."""

    system: str
    url: str
    fields: dict[str, Any]
    pid: int


@dataclass(frozen=True)
class Memory:
    """Resident memory of a server's process tree with no request running, ``when`` the model is loaded
    or after the run: weights read from safetensors are mapped from the file, and count once touched.
    RSS counts pages shared between the processes once in each, PSS shares them out."""

    size: str
    system: str
    when: str
    rss_mib: float
    pss_mib: float
    processes: int


def modelserve_repository(folder: Path, root: Path, max_num_seqs: int, max_model_len: int, int8: bool) -> Path:
    """A repository at ``root`` serving the model ``folder`` (linked, not copied)."""
    (root / MODEL).mkdir(parents=True)
    (root / MODEL / "1").symlink_to(folder, target_is_directory=True)
    config = f"platform: llm\nllm:\n  max_model_len: {max_model_len}\n  max_num_seqs: {max_num_seqs}\n"
    (root / MODEL / "config.yaml").write_text(config + ("  quantization: int8\n" if int8 else ""))
    return root


@contextmanager
def modelserve(system: str, repository: Path, env: dict[str, str]) -> Iterator[Endpoint]:
    """`modelserve serve` with its defaults on ``repository``, ``env`` added to the environment, until
    the block ends."""
    process, url, _ = start_server(repository, 1, env=env)
    try:
        wait_ready(process, f"{url}/v2/models/{MODEL}/ready", 120, system)
        yield Endpoint(system, url, {"model": MODEL, "ignore_eos": True}, process.pid)
    finally:
        process.terminate()
        process.wait(30)


def accelerate_path() -> Path | None:
    """Where `transformers serve` finds `accelerate`: None where this venv has it."""
    if importlib.util.find_spec("accelerate") is not None:
        return None
    if not (ACCELERATE / "accelerate").is_dir():
        print(f"installing accelerate into {ACCELERATE} for `transformers serve` (first run only)...", flush=True)
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(ACCELERATE)]
        subprocess.run([*pip, "accelerate>=1.1"], check=True)
    return ACCELERATE


@contextmanager
def transformers_serve(
    folder: Path, max_num_seqs: int, max_model_len: int, log: Path, env: dict[str, str]
) -> Iterator[Endpoint]:
    """`transformers serve FOLDER --continuous-batching` on the CPU until the block ends. Its paged cache
    is sized to hold what modelserve's may (``max_num_seqs`` sequences of ``max_model_len`` tokens), with
    modelserve's prefill budget per step: left to itself it takes 60% of the host's RAM for the cache.
    ``env`` is added to the environment."""
    binary = Path(sys.executable).parent / "transformers"
    port = free_port()
    pages = math.ceil(max_num_seqs * max_model_len / PAGE_TOKENS)
    command = [
        *(str(binary), "serve", str(folder), "--continuous-batching", "--device", "cpu", "--dtype", "float32"),
        *("--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_model_len)),
        *("--cb-num-blocks", str(pages), "--cb-max-batch-tokens", str(BATCHED_TOKENS), "--log-level", "warning"),
    ]
    environment = {**os.environ, **env}
    if (extra := accelerate_path()) is not None:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra), os.environ.get("PYTHONPATH")]))
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output, env=environment)
    url = f"http://127.0.0.1:{port}"
    children: list[psutil.Process] = []
    try:
        wait_ready(process, f"{url}/health", 180, f"{TRANSFORMERS_SERVE} (its log: {log})")
        children = psutil.Process(process.pid).children(recursive=True)
        # No ignore_eos there: a request's generation_config overrides the model's, and -1 is "no EOS".
        fields = {"model": str(folder), "generation_config": json.dumps({"eos_token_id": -1})}
        yield Endpoint(TRANSFORMERS_SERVE, url, fields, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        for child in children:  # its model's process, should the server have left it behind
            if child.is_running():
                child.kill()


def idle_memory(size: str, endpoint: Endpoint, when: str) -> Memory:
    """``endpoint``'s process and its children, as they are now."""
    root = psutil.Process(endpoint.pid)
    tree = [root, *root.children(recursive=True)]
    rss = sum(p.memory_info().rss for p in tree) / 2**20
    pss = sum(p.memory_full_info().pss for p in tree) / 2**20
    return Memory(size, endpoint.system, when, rss, pss, len(tree))


async def stream(client: aiohttp.ClientSession, endpoint: Endpoint, tokens: int) -> Timing:
    """One streamed completion of ``tokens`` tokens, greedy: when each piece of text arrived, and the
    output tokens the server counted (its usage chunk)."""
    body = {"prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True}
    body |= {"stream_options": {"include_usage": True}} | endpoint.fields
    started = time.perf_counter()
    arrivals: list[float] = []
    counted = 0
    async with client.post(f"{endpoint.url}/v1/completions", json=body) as answer:
        answer.raise_for_status()
        async for line in answer.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line.removeprefix(b"data: "))
            if "error" in chunk:
                raise SystemExit(f"{endpoint.system} failed a stream: {chunk['error']}")
            if any(choice.get("text") for choice in chunk["choices"]):
                arrivals.append(time.perf_counter())
            counted = (chunk.get("usage") or {}).get("completion_tokens", counted)
    if not arrivals:
        raise SystemExit(f"{endpoint.system} streamed no text")
    return Timing(arrivals[0] - started, arrivals, counted)


async def stream_round(client: aiohttp.ClientSession, endpoint: Endpoint, count: int, tokens: int) -> list[Timing]:
    """``count`` streams at once."""
    return list(await asyncio.gather(*(stream(client, endpoint, tokens) for _ in range(count))))
