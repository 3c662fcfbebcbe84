"""A serving process collects cyclic garbage far less often than Python's defaults (server/garbage.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelserve.server.garbage import THRESHOLDS
from tests.protocol.serving import serving


@pytest.fixture
def default_thresholds() -> Iterator[tuple[int, int, int]]:
    """Python's thresholds while the test runs, whatever earlier tests set; restored afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_a_server_starting_tunes_the_collector(built_repository: Path, default_thresholds: tuple[int, ...]) -> None:
    assert gc.get_threshold() != THRESHOLDS
    with serving(built_repository, load_models=["simple"]) as client:
        assert gc.get_threshold() == THRESHOLDS
        assert client.get("/v2/health/ready").status_code == 200
