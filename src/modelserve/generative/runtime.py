"""A generative model as a runtime of the model manager: loaded, measured, evicted like any other.

Its requests do not go through the tensor batcher (the engine batches at every step), except the
V2 ``infer`` call, which Triton's vLLM backend answers with ``text_input`` → ``text_output``: that one
generates with the model's default sampling and blocks its inference thread until done.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.errors import InferenceFailed, InvalidInput, ModelLoadError
from modelserve.generative.params import SamplingParams
from modelserve.repository.llm import LLMConfig
from modelserve.runtimes.base import Arrays, Runtime, Signature
from modelserve.types import TensorSpec

TEXT_INPUT, TEXT_OUTPUT = "text_input", "text_output"


class GenerativeRuntime(Runtime):
    """A Hugging Face folder served by the engine its config.yaml ``llm.engine`` names."""

    engine: Any = None

    @property
    def llm(self) -> LLMConfig:
        """The ``llm`` section of config.yaml, or its defaults."""
        return self.config.llm or LLMConfig()

    def load(self) -> Signature:
        folder = self.path.parent
        missing = [name for name in ("config.json", "tokenizer.json") if not (folder / name).exists()]
        if not any(folder.glob("*.safetensors")):
            missing.append("*.safetensors")
        if missing:
            raise ModelLoadError(f"{folder}: a generative model folder needs {', '.join(missing)}")
        self.engine = build(folder, self.llm)
        text = (TensorSpec(TEXT_INPUT, "BYTES", (1,)),), (TensorSpec(TEXT_OUTPUT, "BYTES", (1,)),)
        return Signature(inputs=text[0], outputs=text[1], batched=False)

    def sampling(self, **asked: Any) -> SamplingParams:
        """A request's sampling parameters: what it asked for over config.yaml's defaults."""
        llm = self.llm
        defaults: dict[str, Any] = {
            "temperature": llm.temperature,
            "top_p": llm.top_p,
            "top_k": llm.top_k,
            "max_tokens": llm.max_tokens,
            "stop": tuple(llm.stop),
        }
        return SamplingParams(**(defaults | {k: v for k, v in asked.items() if v is not None}))

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        prompt = inputs[TEXT_INPUT].reshape(-1)
        if prompt.size != 1:
            raise InvalidInput(f"{TEXT_INPUT} must hold one prompt, not {prompt.size}")
        value = prompt[0]
        text = value.decode() if isinstance(value, bytes) else str(value)
        done = threading.Event()
        pieces: list[str] = []
        endings: list[str] = []

        def listen(_: object, output: Any) -> None:
            pieces.append(output.text)
            if output.finish_reason is not None:
                endings.append(output.finish_reason)
                done.set()

        self.engine.submit(uuid.uuid4().hex, self.engine.encode(text), self.sampling(), listen)
        done.wait()
        if endings != ["stop"] and endings != ["length"]:
            raise InferenceFailed(f"generation ended with {endings[0]}; the server log has the details")
        return {TEXT_OUTPUT: np.array(["".join(pieces).encode()], dtype=np.object_)}

    def generation_counts(self) -> tuple[int, int, int, int]:
        """Sequences running and waiting, cache tokens held and the most that may be, for the metrics."""
        return self.engine.counts() if self.engine is not None else (0, 0, 0, 0)

    def memory_bytes(self) -> int:
        return int(self.engine.memory_bytes()) if self.engine is not None else 0

    def unload(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def build(folder: Path, config: LLMConfig) -> Any:
    """The engine ``config.engine`` names: vLLM only where it and a GPU are there; the CPU engine in an
    engine process of its own. A setting the engine cannot honour fails the load with the reason, rather
    than being ignored."""
    if config.engine == "vllm":
        from modelserve.generative.vllm_engine import VLLMEngine

        return VLLMEngine(folder, config)
    if config.quantization == "fp8":
        raise ModelLoadError(
            "quantization fp8 is vLLM's, on a GPU (engine: vllm); the CPU engine quantizes to int8 (quantization: int8)"
        )
    if config.gpu_memory_utilization is not None:
        raise ModelLoadError(
            "gpu_memory_utilization is the share of a GPU vLLM takes; the CPU engine (engine: transformers) "
            "uses none: remove it, or set engine: vllm"
        )
    from modelserve.generative.process import EngineProcess  # transformers' tokenizer: only now

    return EngineProcess(folder, config)
