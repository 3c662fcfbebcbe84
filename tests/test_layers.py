"""The layers import downwards only: the core knows no web or RPC framework, and what the protocols
share (server/state.py) knows no protocol. A fresh interpreter imports one module and reports what
came with it, so an import hidden inside a function body counts only when it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "modelserve.errors",
    "modelserve.types",
    "modelserve.models.manager",
    "modelserve.batching.batcher",
    "modelserve.repository.remote",
    "modelserve.runtimes.onnx",
    "modelserve.history.recorder",
]
FRAMEWORKS = ("fastapi", "starlette", "grpc", "uvicorn")


def imported_with(module: str) -> set[str]:
    script = f"import sys, {module}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_web_or_rpc_framework(module: str) -> None:
    frameworks = {name for name in imported_with(module) if name.split(".")[0] in FRAMEWORKS}
    assert not frameworks, f"{module} brings {sorted(frameworks)[:5]}"


def test_what_the_protocols_share_imports_no_protocol() -> None:
    protocols = {name for name in imported_with("modelserve.server.state") if name.startswith("modelserve.protocol")}
    assert not protocols, f"server/state.py brings {sorted(protocols)}"
