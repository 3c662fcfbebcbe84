"""Fixtures of the protocol tests: in-process servers over the example repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.protocol.serving import TestClient, serving


@pytest.fixture(scope="module")
def client(built_repository: Path) -> Iterator[TestClient]:
    """A server with every example model loaded, shared by one module's tests; they must not load or unload."""
    with serving(built_repository) as client:
        yield client
