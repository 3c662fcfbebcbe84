"""The GPU engine: refused at load, naming what the host lacks, wherever vLLM or a GPU is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from modelserve.errors import ModelLoadError
from modelserve.generative.engine import build
from modelserve.repository.config import LLMConfig, ModelConfig

HAS_VLLM = importlib.util.find_spec("vllm") is not None
HAS_GPU = torch.cuda.is_available()


@pytest.mark.skipif(HAS_VLLM and HAS_GPU, reason="this host has vLLM and a GPU: the refusal is for hosts without")
def test_engine_vllm_is_refused_with_what_the_host_lacks(tiny_llama_folder: Path) -> None:
    with pytest.raises(ModelLoadError) as refused:
        build(tiny_llama_folder, LLMConfig(engine="vllm"))
    message = refused.value.message
    assert ("the vllm package" in message) != HAS_VLLM
    assert ("a CUDA GPU" in message) != HAS_GPU
    assert "engine: transformers" in message


def test_the_load_of_a_repository_model_fails_with_that_reason(tiny_llama_folder: Path) -> None:
    """Through the runtime, as the model manager loads it."""
    from modelserve.generative.runtime import GenerativeRuntime

    runtime = GenerativeRuntime(tiny_llama_folder / "config.json", ModelConfig(llm=LLMConfig(engine="vllm")))
    with pytest.raises(ModelLoadError, match="engine vllm"):
        runtime.load()


@pytest.mark.skipif(not (HAS_VLLM and HAS_GPU), reason="needs the vllm package and a CUDA GPU")
def test_engine_vllm_on_a_gpu_host_says_it_is_not_wired_yet(tiny_llama_folder: Path) -> None:
    with pytest.raises(ModelLoadError, match="not wired"):
        build(tiny_llama_folder, LLMConfig(engine="vllm"))
