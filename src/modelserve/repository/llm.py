"""config.yaml's ``llm`` section (platform llm: generative/) and the server's settings for what it leaves
out (the runbooks' MAX_NUM_SEQS, QUANTIZATION, VLLM_GPU_MEMORY_UTILIZATION)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from modelserve.errors import ModelLoadError
from modelserve.repository.strict import Strict


class LLMConfig(Strict):
    """A generative model's engine and its default sampling; a request's own parameters win over these."""

    engine: Literal["transformers", "vllm"] = "transformers"  # transformers: the CPU engine; vllm: GPU
    max_model_len: int | None = Field(None, ge=2)  # prompt plus output, in tokens; left out: the model's own
    max_num_seqs: int = Field(8, ge=1, le=4096)  # sequences in the running batch
    max_waiting: int = Field(64, ge=0)  # sequences queued beyond those; more are refused (429)
    max_num_batched_tokens: int = Field(512, ge=1)  # prompt tokens prefilled in one step
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # int8: the CPU engine's linear layers quantized dynamically (int8 weights, activations per call);
    # fp8: vLLM's dynamic fp8 on a GPU. Each engine refuses the one it cannot honour, at load.
    quantization: Literal["int8", "fp8"] | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)  # vLLM's share of the GPU; the CPU engine refuses it
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    max_tokens: int | None = Field(None, ge=1)  # left out: the rest of max_model_len
    stop: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _int8_from_float32(self) -> LLMConfig:
        if self.engine == "transformers" and self.quantization == "int8" and self.dtype != "float32":
            raise ValueError(f"quantization int8 quantizes float32 weights; set dtype: float32, not {self.dtype}")
        return self


_LLM_VARIABLES = {
    "max_num_seqs": "MAX_NUM_SEQS",
    "quantization": "QUANTIZATION",
    "gpu_memory_utilization": "VLLM_GPU_MEMORY_UTILIZATION",
}


@dataclass(frozen=True, slots=True)
class LLMDefaults:
    """The server's settings for what a generative model's ``llm`` section leaves out: the runbooks'
    MAX_NUM_SEQS, QUANTIZATION and VLLM_GPU_MEMORY_UTILIZATION. A value an engine cannot honour fails
    that model's load with the reason, rather than being ignored while the runbook's fix seems to work."""

    max_num_seqs: int | None = None
    quantization: str | None = None
    gpu_memory_utilization: float | None = None  # vLLM's alone: models on the CPU engine are left as they are

    def apply(self, llm: LLMConfig) -> LLMConfig:
        """``llm`` with these defaults where it sets nothing itself; ModelLoadError when they do not fit it."""
        given = {
            "max_num_seqs": self.max_num_seqs,
            "quantization": self.quantization,
            "gpu_memory_utilization": self.gpu_memory_utilization if llm.engine == "vllm" else None,
        }
        chosen = {k: v for k, v in given.items() if v is not None and k not in llm.model_fields_set}
        if not chosen:
            return llm
        try:
            return LLMConfig.model_validate(llm.model_dump(exclude_unset=True) | chosen)
        except ValidationError as exc:
            names = ", ".join(f"{_LLM_VARIABLES[k]}={v}" for k, v in chosen.items())
            problem = "; ".join(error["msg"] for error in exc.errors())
            raise ModelLoadError(f"the server's {names} cannot apply to this model: {problem}") from None
