"""The GPU engine: vLLM's ``AsyncLLMEngine`` behind the same calls as the CPU engine (submit, cancel,
counts), so the OpenAI routes, the V2 generate extension, metrics, logs and the memory budget treat both
alike. vLLM batches, pages the KV cache and chunks prefills itself; this module only feeds it.

vLLM runs its own asyncio loop in a thread of its own: its engine is bound to the loop it was built on,
and the server's loop must not wait on its scheduling. Each sequence is a task on that loop reading
``generate()``; cancelling the task is how vLLM is told to abort a request (its ``generate`` aborts on
``CancelledError``), which frees the sequence's KV-cache blocks at its next step.

On a host without vLLM or a CUDA GPU, asking for this engine fails the load with what is missing,
rather than quietly running on the CPU engine.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelserve.errors import ModelLoadError
from modelserve.generative.params import SamplingParams
from modelserve.generative.prompts import Prompts
from modelserve.generative.scheduler import Sequence, SequenceState
from modelserve.repository.llm import LLMConfig

if TYPE_CHECKING:
    from modelserve.generative.scheduler import Listener

# vLLM's finish reasons as ours; anything else (an abort, an error) ends as "abort".
_REASONS = {"stop": "stop", "length": "length"}


def check_available() -> None:
    """Raise ModelLoadError naming what the vLLM engine lacks on this host."""
    missing = []
    if importlib.util.find_spec("vllm") is None:
        missing.append("the vllm package (pip install 'modelserve[gpu]' vllm)")
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if not gpu:
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    if missing:
        raise ModelLoadError(f"engine vllm needs {' and '.join(missing)}; set engine: transformers to run on the CPU")


def engine_arguments(folder: Path, config: LLMConfig) -> dict[str, Any]:
    """vLLM's ``AsyncEngineArgs`` for ``config``: the runbooks' settings by vLLM's own names."""
    if config.quantization == "int8":
        raise ModelLoadError(
            "quantization int8 is the CPU engine's; vLLM quantizes a float checkpoint on the fly to fp8 only "
            "(set quantization: fp8), and reads int8 checkpoints (compressed-tensors, GPTQ) from their own "
            "config.json with no quantization set here"
        )
    arguments: dict[str, Any] = {
        "model": str(folder),
        "tokenizer": str(folder),
        "dtype": config.dtype,
        "max_num_seqs": config.max_num_seqs,
        "disable_log_stats": True,  # the server's own metrics count tokens and latencies
    }
    if config.max_model_len is not None:
        arguments["max_model_len"] = config.max_model_len
    if config.gpu_memory_utilization is not None:
        arguments["gpu_memory_utilization"] = config.gpu_memory_utilization
    if config.quantization is not None:
        arguments["quantization"] = config.quantization
    return arguments


def vllm_sampling(params: SamplingParams, max_tokens: int) -> dict[str, Any]:
    """vLLM's ``SamplingParams`` for ours (top_k -1 is its "no limit")."""
    return {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k or -1,
        "max_tokens": max_tokens,
        "stop": list(params.stop) or None,
        "seed": params.seed,
        "ignore_eos": params.ignore_eos,
    }


class VLLMEngine(Prompts):
    """A model run by vLLM on the GPU, its outputs handed to listeners as the CPU engine hands them."""

    def __init__(self, folder: Path, config: LLMConfig) -> None:
        check_available()
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        arguments = engine_arguments(folder, config)
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm", daemon=True)
        self._thread.start()

        async def build() -> Any:
            return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**arguments))

        try:
            self._engine = asyncio.run_coroutine_threadsafe(build(), self._loop).result()
        except Exception as exc:  # vLLM's own errors for a model or a setting it cannot take
            self._stop_loop()
            raise ModelLoadError(f"{folder}: vLLM could not load the model: {exc}") from exc
        model_config = self._engine.engine.model_config if hasattr(self._engine, "engine") else None
        self.max_model_len = int(getattr(model_config, "max_model_len", 0) or config.max_model_len or 2048)
        self.vocab_size = len(self.tokenizer)
        self._tasks: dict[Sequence, Future[None]] = {}
        self._lock = threading.Lock()

    def submit(self, request_id: str, prompt_ids: list[int], params: SamplingParams, listener: Listener) -> Sequence:
        """Hand a generation to vLLM; refuse it now if it cannot fit the context."""
        sequence = Sequence(request_id, list(prompt_ids), params, self.room(prompt_ids, params))
        task = asyncio.run_coroutine_threadsafe(self._generate(sequence, listener), self._loop)
        with self._lock:
            self._tasks[sequence] = task
        task.add_done_callback(lambda _: self._forget(sequence))
        return sequence

    def cancel(self, sequence: Sequence) -> None:
        """Abort a sequence in vLLM (its blocks are freed at its next step); a finished one is left."""
        sequence.cancelled = True
        with self._lock:
            task = self._tasks.get(sequence)
        if task is not None:
            task.cancel()

    def counts(self) -> tuple[int, int, int, int]:
        """Sequences generating and waiting for their first token. vLLM keeps its KV-cache figures to
        itself (its own ``vllm:kv_cache_usage_perc``), so none are reported here."""
        with self._lock:
            sequences = list(self._tasks)
        running = sum(1 for s in sequences if s.state is SequenceState.RUNNING)
        return running, len(sequences) - running, 0, 0

    def memory_bytes(self) -> int:
        """Host memory held: vLLM keeps the weights and the cache on the GPU, measured there (NVML)."""
        return 0

    def close(self) -> None:
        """Abort every sequence and stop vLLM's loop."""
        with self._lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        shutdown = getattr(self._engine, "shutdown", None)
        if callable(shutdown):
            self._loop.call_soon_threadsafe(shutdown)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def _forget(self, sequence: Sequence) -> None:
        with self._lock:
            self._tasks.pop(sequence, None)

    async def _generate(self, sequence: Sequence, listener: Listener) -> None:
        from vllm import SamplingParams as VLLMSampling

        from modelserve.generative.scheduler import Output

        sampling = VLLMSampling(**vllm_sampling(sequence.params, sequence.max_tokens))
        sent = 0
        try:
            stream = self._engine.generate(
                {"prompt_token_ids": sequence.prompt_ids}, sampling, request_id=sequence.request_id
            )
            async for answer in stream:
                completion = answer.outputs[0]
                now = time.perf_counter()
                new_tokens = len(completion.token_ids) - len(sequence.output_ids)
                if sequence.scheduled is None:
                    sequence.scheduled, sequence.state = now, SequenceState.RUNNING
                if new_tokens > 0:
                    if sequence.last_token is not None:
                        sequence.gaps.extend([(now - sequence.last_token) / new_tokens] * new_tokens)
                    sequence.first_token = sequence.first_token or now
                    sequence.last_token = now
                    sequence.output_ids = list(completion.token_ids)
                piece, sent = completion.text[sent:], len(completion.text)
                reason = _REASONS.get(str(completion.finish_reason)) if answer.finished else None
                if answer.finished:
                    sequence.finish_reason = reason or "abort"
                    sequence.state = SequenceState.FINISHED
                listener(sequence, Output(piece, max(new_tokens, 0), sequence.finish_reason))
                if answer.finished:
                    return
        except asyncio.CancelledError:
            pass  # vLLM's generate aborted the request on its way out
        if sequence.finish_reason is None:
            sequence.finish_reason, sequence.state = "abort", SequenceState.FINISHED
            listener(sequence, Output("", 0, "abort"))
