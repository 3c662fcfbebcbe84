"""The layers import downwards only: the core knows no web or RPC framework, and what the protocols
share (server/state.py) knows no protocol. A fresh interpreter imports one module and reports what
came with it, so an import hidden inside a function body counts only when it runs."""

from __future__ import annotations

import ast
import importlib
import inspect
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
    "modelserve.generative.engine",
    "modelserve.generative.process",
    "modelserve.generative.runtime",
]
FRAMEWORKS = ("fastapi", "starlette", "grpc", "uvicorn")
# The model manager's parts, each a class of its own that the manager composes.
COLLABORATORS = [
    ("modelserve.models.manager", "ModelManager"),
    ("modelserve.models.loading", "ModelLoader"),
    ("modelserve.models.eviction", "Eviction"),
]


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


@pytest.mark.parametrize(("module", "name"), COLLABORATORS, ids=[name for _, name in COLLABORATORS])
def test_the_managers_parts_are_collaborators_not_an_inheritance_chain(module: str, name: str) -> None:
    """Each part inherits nothing and reaches no private attribute of what it holds (``self._x._y``): it
    uses the others through their public methods, so each can change behind its interface."""
    source = importlib.import_module(module)
    assert getattr(source, name).__bases__ == (object,), f"{name} inherits {getattr(source, name).__bases__}"
    reached = sorted(
        ast.unparse(node)
        for node in ast.walk(ast.parse(inspect.getsource(source)))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and isinstance(node.value, ast.Attribute)
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    )
    assert not reached, f"{module} reaches into its collaborators: {reached}"
