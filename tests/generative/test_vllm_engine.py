"""The GPU engine: the runbooks' settings by vLLM's names, refused at load naming what the host lacks
wherever vLLM or a GPU is missing, and, on a host with both, greedy output equal to the CPU engine's."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from modelserve.errors import ModelLoadError
from modelserve.generative.params import SamplingParams
from modelserve.generative.runtime import build
from modelserve.generative.scheduler import Sequence
from modelserve.generative.vllm_engine import engine_arguments, vllm_sampling
from modelserve.repository.config import ModelConfig
from modelserve.repository.llm import LLMConfig, LLMDefaults

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


@pytest.mark.skipif(HAS_VLLM and HAS_GPU, reason="this host has vLLM and a GPU: the refusal is for hosts without")
def test_the_load_of_a_repository_model_fails_with_that_reason(tiny_llama_folder: Path) -> None:
    """Through the runtime, as the model manager loads it."""
    from modelserve.generative.runtime import GenerativeRuntime

    runtime = GenerativeRuntime(tiny_llama_folder / "config.json", ModelConfig(llm=LLMConfig(engine="vllm")))
    with pytest.raises(ModelLoadError, match="engine vllm"):
        runtime.load()


def test_the_runbooks_settings_reach_vllm_by_its_own_names(tiny_llama_folder: Path) -> None:
    defaults = LLMDefaults(max_num_seqs=128, quantization="fp8", gpu_memory_utilization=0.85)
    config = defaults.apply(LLMConfig(engine="vllm", max_model_len=256, dtype="float16"))

    arguments = engine_arguments(tiny_llama_folder, config)

    assert arguments["gpu_memory_utilization"] == 0.85
    assert arguments["max_num_seqs"] == 128
    assert arguments["quantization"] == "fp8"
    assert arguments["max_model_len"] == 256
    assert arguments["dtype"] == "float16"
    assert arguments["model"] == arguments["tokenizer"] == str(tiny_llama_folder)


def test_int8_is_refused_on_vllm_with_what_to_set_instead(tiny_llama_folder: Path) -> None:
    with pytest.raises(ModelLoadError, match="set quantization: fp8"):
        engine_arguments(tiny_llama_folder, LLMConfig(engine="vllm", quantization="int8"))


def test_sampling_maps_no_top_k_to_vllms_minus_one() -> None:
    ours = SamplingParams(temperature=0.0, top_p=0.9, top_k=0, max_tokens=8, stop=("\n",), seed=3, ignore_eos=True)
    assert vllm_sampling(ours, 8) == {
        "temperature": 0.0,
        "top_p": 0.9,
        "top_k": -1,
        "max_tokens": 8,
        "stop": ["\n"],
        "seed": 3,
        "ignore_eos": True,
    }


def generated(engine: Any, request_id: str, prompt: str, params: SamplingParams, cancel: bool = False) -> Sequence:
    """Run one generation to its end (cancelled at once with ``cancel``); the finished sequence."""
    ended = threading.Event()
    sequence = engine.submit(request_id, engine.encode(prompt), params, lambda s, o: o.finish_reason and ended.set())
    if cancel:
        engine.cancel(sequence)
    assert ended.wait(120)
    return sequence


@pytest.mark.skipif(not (HAS_VLLM and HAS_GPU), reason="needs the vllm package and a CUDA GPU")
def test_vllm_greedy_output_equals_the_cpu_engines_and_a_cancel_frees_the_sequence(tiny_llama_folder: Path) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    answers: dict[str, list[int]] = {}
    for name in ("transformers", "vllm"):
        engine = build(tiny_llama_folder, LLMConfig(engine=name, max_model_len=256))
        try:
            answers[name] = generated(engine, "a", "Hello, world!", params).output_ids
            if name == "vllm":
                long = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)
                assert generated(engine, "b", "Hello", long, cancel=True).finish_reason == "abort"
                assert engine.counts()[:2] == (0, 0)
        finally:
            engine.close()
    assert answers["vllm"] == answers["transformers"]
