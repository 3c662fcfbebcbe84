"""What a real `modelserve serve` process logs for the people on call: LOG_LEVEL as they write it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.e2e.server import serve


def _lines(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of the server's output."""
    return [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_log_level_in_capitals_starts_the_server_at_that_level(built_repository: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with serve(built_repository, log, env={"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}):
        pass

    assert any(line["level"] == "info" and line["message"].startswith("ready:") for line in _lines(log))
    assert not any(line["level"] == "debug" for line in _lines(log))
