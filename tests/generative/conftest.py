"""The tiny generative model, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.generative.builders import tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face folder of a random 2-layer Llama and its tokenizer. Do not modify it."""
    return tiny_llama(tmp_path_factory.mktemp("tiny_llama") / "1")
