"""Where the deploy tests find Prometheus' tools: .tools (unpacked by `make tools`), then PATH."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    """The path of ``name``; fails, saying how to get it, when it is nowhere."""
    unpacked = ROOT / ".tools" / "root" / "usr" / "bin" / name
    if unpacked.exists():
        return str(unpacked)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is missing: `make test` (or `make tools`) unpacks Debian's package into .tools")
    return found
