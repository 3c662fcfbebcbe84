"""The runbooks' MAX_NUM_SEQS, QUANTIZATION and VLLM_GPU_MEMORY_UTILIZATION as the server's defaults for
generative models: they fill what a model's llm section leaves out, never override what it sets, and a
value the model's engine cannot honour fails its load with the reason instead of being ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.errors import ModelLoadError
from modelserve.generative.runtime import build
from modelserve.repository.llm import LLMConfig, LLMDefaults

RUNBOOK = LLMDefaults(max_num_seqs=128, quantization="int8", gpu_memory_utilization=0.9)


def test_the_servers_values_fill_what_the_model_leaves_out() -> None:
    config = RUNBOOK.apply(LLMConfig())
    assert config.max_num_seqs == 128
    assert config.quantization == "int8"
    assert config.gpu_memory_utilization is None, "vLLM's share of a GPU is not the CPU engine's business"


def test_what_the_model_sets_wins_and_an_explicit_null_opts_out() -> None:
    config = RUNBOOK.apply(LLMConfig.model_validate({"max_num_seqs": 4, "quantization": None}))
    assert config.max_num_seqs == 4
    assert config.quantization is None


def test_vllm_models_take_the_gpu_share() -> None:
    assert RUNBOOK.apply(LLMConfig(engine="vllm")).gpu_memory_utilization == 0.9


def test_a_server_value_that_contradicts_the_model_names_the_variable() -> None:
    with pytest.raises(ModelLoadError, match=r"QUANTIZATION=int8 cannot apply to this model: .*dtype: float32"):
        RUNBOOK.apply(LLMConfig(dtype="bfloat16"))


def test_fp8_on_the_cpu_engine_is_refused_at_load_with_the_reason(tiny_llama_folder: Path) -> None:
    with pytest.raises(ModelLoadError, match="quantization fp8 is vLLM's"):
        build(tiny_llama_folder, LLMDefaults(quantization="fp8").apply(LLMConfig()))


def test_a_gpu_share_on_the_cpu_engine_is_refused_at_load(tiny_llama_folder: Path) -> None:
    with pytest.raises(ModelLoadError, match="gpu_memory_utilization is the share of a GPU vLLM takes"):
        build(tiny_llama_folder, LLMConfig(gpu_memory_utilization=0.5))
