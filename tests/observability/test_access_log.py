"""The access log writes the same line whichever way it takes: straight to the JSON handler, or through
structlog's processors like every other line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from modelserve.errors import InvalidInput
from modelserve.observability.logging import AccessLog, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    logging.getLogger().handlers.clear()


def _never_dropped(lines: int) -> None:
    raise AssertionError(f"{lines} access line(s) dropped")


def _written(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


@pytest.mark.usefixtures("restore_logging")
def test_the_direct_json_line_equals_the_one_structlog_writes(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    error = InvalidInput("input 'x' has shape [1, 15]")
    direct_log = AccessLog(1.0, _never_dropped)
    direct_log.record("mlp", "1", "http", 400, 0.0012345, error)
    direct_log.close()  # the direct way writes from a thread of its own; close writes what it holds
    direct = _written(capsys)
    logging.getLogger().handlers.append(logging.NullHandler())  # two handlers: the direct way is not taken
    AccessLog(1.0, _never_dropped).record("mlp", "1", "http", 400, 0.0012345, error)
    through_structlog = _written(capsys)

    assert len(direct) == len(through_structlog) == 1
    stamps = [datetime.fromisoformat(str(line.pop("timestamp")).replace("Z", "+00:00")) for line in direct]
    stamps += [datetime.fromisoformat(str(line.pop("timestamp")).replace("Z", "+00:00")) for line in through_structlog]
    assert all(stamp.utcoffset() == UTC.utcoffset(None) for stamp in stamps)
    assert direct == through_structlog
    assert direct[0] == {
        "model": "mlp",
        "version": "1",
        "protocol": "http",
        "status": "error",
        "code": 400,
        "latency_ms": 1.234,
        "error": "input 'x' has shape [1, 15]",
        "message": "inference request",
        "level": "info",
        "logger": "modelserve.access",
    }


@pytest.mark.usefixtures("restore_logging")
def test_level_and_sample_rate_still_decide(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", "json")
    quiet = AccessLog(1.0, _never_dropped)
    quiet.record("mlp", "1", "http", 200, 0.001, None)
    configure_logging("info", "json")
    unsampled = AccessLog(0.0, _never_dropped)
    unsampled.record("mlp", "1", "http", 200, 0.001, None)
    quiet.close()
    unsampled.close()
    assert capsys.readouterr().err == ""
