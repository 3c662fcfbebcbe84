"""The GPU engine (vLLM). Only the check is here: on a host without vLLM or a GPU, asking for it fails the
load with what is missing, rather than quietly running on the CPU engine."""

from __future__ import annotations

import importlib.util

from modelserve.errors import ModelLoadError


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
    raise ModelLoadError("engine vllm is not wired in this build yet; set engine: transformers")
