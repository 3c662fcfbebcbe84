"""What the script tests share: running a script as an operator pastes it, from the repository root,
with a clean environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [
    "test-inference.sh",
    "smoke-test.sh",
    "integration-test.sh",
    "preload-models.sh",
    "backup-model-serving.sh",
    "restore-model-serving.sh",
]
# What an operator's shell may hold that would point a script elsewhere than a test says.
INHERITED = (
    "MODELSERVE_URL",
    "MODELSERVE_TOKEN",
    "MODELSERVE_GRPC_ADDRESS",
    "MODEL_REPOSITORY",
    "MODEL_CACHE_DIR",
    "DATABASE_URL",
    "LOAD_MODELS",
    "PRELOAD_MODELS",
    "SMOKE_MODELS",
    "BACKUP_ROOT",
    "BACKUP_DIR",
)
MLP_BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}]}


def run(command: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``command`` from the repository root, as an operator pastes it, with ``env`` over a clean environment."""
    environment = {k: v for k, v in os.environ.items() if k not in INHERITED}
    environment.update({"COLUMNS": "200", **env})
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environment)


def script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``./scripts/NAME args``."""
    return run([f"./scripts/{name}", *args], **env)


def lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]
