"""The runbooks' variables for generative models on a real server: QUANTIZATION and MAX_NUM_SEQS reach
every generative model that does not set its own (seen in its config, as Triton lists a vLLM model's
engine arguments), VLLM_GPU_MEMORY_UTILIZATION leaves CPU-engine models alone, and a model that sets its
own values keeps them. The int8 model answers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import RunningServer, serve
from tests.generative.builders import tiny_llama

pytestmark = pytest.mark.e2e
RUNBOOK = {"QUANTIZATION": "int8", "MAX_NUM_SEQS": "3", "VLLM_GPU_MEMORY_UTILIZATION": "0.85", "REQUEST_TIMEOUT": "300"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("llm_settings") / "model_repository"
    tiny_llama(repository / "tiny-llm" / "1")
    tiny_llama(repository / "own" / "1")
    (repository / "own" / "config.yaml").write_text("platform: llm\nllm:\n  max_num_seqs: 5\n  quantization: null\n")
    with serve(repository, repository.parent / "server.log", env=RUNBOOK) as running:
        yield running


def parameters(server: RunningServer, model: str) -> dict[str, str]:
    answer = httpx.get(f"{server.url}/v2/models/{model}/config", timeout=30)
    assert answer.status_code == 200, answer.text
    return {k: v["string_value"] for k, v in answer.json()["parameters"].items()}


def test_the_runbooks_variables_reach_a_model_that_sets_nothing(server: RunningServer) -> None:
    engine = parameters(server, "tiny-llm")
    assert engine["quantization"] == "int8"
    assert engine["max_num_seqs"] == "3"
    assert engine["engine"] == "transformers"
    assert "gpu_memory_utilization" not in engine, "vLLM's share of a GPU is not applied to the CPU engine"
    answer = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "tiny-llm", "prompt": "Hello", "max_tokens": 4, "temperature": 0, "ignore_eos": True},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 4


def test_a_model_keeps_what_its_config_sets(server: RunningServer) -> None:
    engine = parameters(server, "own")
    assert engine["max_num_seqs"] == "5"
    assert "quantization" not in engine
