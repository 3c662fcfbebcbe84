"""The tiny generative model of the tests: examples/build_llm.py's, so `make run` serves what the tests
check (a random Llama and a tokenizer trained locally; no model hub is reachable)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

_spec = importlib.util.spec_from_file_location("build_llm", ROOT / "examples" / "build_llm.py")
assert _spec is not None
assert _spec.loader is not None
_builder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_builder)

tiny_llama = _builder.tiny_llama
build_example_llm = _builder.build  # the tiny LLM and its config.yaml into a repository, as `make run` builds it
