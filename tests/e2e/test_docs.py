"""The examples in docs/API.md and the README's tour, executed against a real server in document order."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import RunningServer, make_run_options, serve
from tests.generative.builders import build_example_llm

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
STATUS = re.compile(r"Response `(\d{3})`")
# Values that differ between runs are compared by type only.
VARIABLE = {"latency_ms", "load_time_seconds", "uptime_seconds", "last_inference", "ns", "byte_size"}
# What follows the host: an ONNX model's instances default to one per CPU (docs/CONFIGURATION.md).
HOST_DEPENDENT = {"$.instance_group[0].count"}
# A request's trace id is new each time: compared by its form, 32 hex digits.
IDENTIFIERS = {"trace_id": re.compile("[0-9a-f]{32}")}


@dataclass
class Example:
    command: str
    status: int
    expected: Any  # parsed JSON, or None for an empty body


def api_examples() -> list[Example]:
    """Each curl block of docs/API.md with the status and JSON documented after it."""
    text = (ROOT / "docs" / "API.md").read_text()
    blocks = [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]
    examples = []
    for index, (language, body, _, end) in enumerate(blocks):
        if language != "bash" or "curl" not in body:
            continue
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        limit = following[2] if following else len(text)
        status = STATUS.search(text, end, limit)
        assert status is not None, f"docs/API.md: no 'Response `NNN`' after {body.strip()!r}"
        expected = json.loads(following[1]) if following and following[0] == "json" else None
        examples.append(Example(" ".join(body.replace("\\\n", " ").split()), int(status.group(1)), expected))
    return examples


def python_examples(path: Path) -> list[str]:
    """The python blocks of a document."""
    return [m.group(2) for m in FENCE.finditer(path.read_text()) if m.group(1) == "python"]


def at(server: RunningServer, text: str) -> str:
    return text.replace("localhost:8000", server.address).replace("localhost:8001", server.grpc_address)


def matches(expected: Any, actual: Any, where: str = "$") -> None:
    """Assert ``actual`` has the documented shape and values (variable fields by type)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        assert sorted(actual) == sorted(expected), f"{where}: keys {sorted(actual)} != documented {sorted(expected)}"
        for key, value in expected.items():
            if key in VARIABLE:
                assert isinstance(actual[key], int | float), f"{where}.{key}: not a number: {actual[key]!r}"
            elif key in IDENTIFIERS:
                assert IDENTIFIERS[key].fullmatch(str(actual[key])), f"{where}.{key}: not an id: {actual[key]!r}"
            else:
                matches(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        assert len(actual) == len(expected), f"{where}: {len(actual)} items, documented {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            matches(e, a, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-5, abs=1e-7), f"{where}: {actual} != documented {expected}"
    elif where in HOST_DEPENDENT:
        assert isinstance(actual, int), f"{where}: not a count: {actual!r}"
        assert actual >= 1, f"{where}: not a positive count: {actual!r}"
    else:
        assert actual == expected, f"{where}: {actual!r} != documented {expected!r}"


def test_api_examples_answer_as_documented(server: RunningServer) -> None:
    examples = api_examples()
    assert len(examples) >= 15
    for example in examples:
        command = at(server, example.command) + " -w '\\n%{http_code}'"
        run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, f"{example.command}: curl failed: {run.stderr}"
        body, _, code = run.stdout.rpartition("\n")
        assert int(code) == example.status, f"{example.command}: status {code}, documented {example.status}: {body}"
        if example.expected is None:
            assert body == "", f"{example.command}: documented an empty body, got {body}"
        else:
            matches(example.expected, json.loads(body))


def test_api_python_examples_run(server: RunningServer) -> None:
    blocks = python_examples(ROOT / "docs" / "API.md")
    assert blocks
    for code in blocks:
        exec(compile(at(server, code), "docs/API.md", "exec"), {})


def test_readme_tour_runs_verbatim(server: RunningServer) -> None:
    text = (ROOT / "README.md").read_text()
    tour = next(m.group(2) for m in FENCE.finditer(text) if m.group(1) == "bash" and "curl" in m.group(2))
    lines = [line for line in tour.splitlines() if line.startswith("curl ")]
    assert len(lines) >= 8
    for line in lines:
        # -f turns an HTTP error into a failing exit status; pipefail keeps it through `| grep`.
        command = "set -o pipefail; " + at(server, line).replace("curl -s ", "curl -sf ", 1)
        run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, f"README line failed ({run.returncode}): {line}\n{run.stdout}{run.stderr}"
        assert run.stdout.strip() or "unload" in line or "load?" in line, f"README line printed nothing: {line}"
    for code in python_examples(ROOT / "README.md"):
        exec(compile(at(server, code), "README.md", "exec"), {})


def test_readme_generative_lines_run_against_what_make_run_serves(
    built_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`make run`'s repository (the examples and the tiny LLM, as its `models` target builds them), served
    as `make run` serves it; the README's curl and openai SDK lines of its generative section."""
    repository = tmp_path_factory.mktemp("make_run") / "model_repository"
    shutil.copytree(built_repository, repository)
    build_example_llm(repository)
    text = (ROOT / "README.md").read_text().split("## Generative models", 1)[1].split("\n## ", 1)[0]
    shell = [m.group(2) for m in FENCE.finditer(text) if m.group(1) == "sh"]
    code = [m.group(2) for m in FENCE.finditer(text) if m.group(1) == "py"]
    assert shell
    assert code
    with serve(repository, repository.parent / "server.log", *make_run_options()) as server:
        for block in shell:
            for command in block.replace("\\\n", " ").splitlines():
                command = "set -o pipefail; " + at(server, command).replace("curl -s ", "curl -sf ", 1)
                run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False)
                assert run.returncode == 0, f"README line failed ({run.returncode}): {command}\n{run.stderr}"
                assert "tiny-llm" in run.stdout, run.stdout
        for block in code:
            exec(compile(at(server, block), "README.md", "exec"), {})
        # make run's one line on pre-warming, and the plan it points to
        plan = httpx.get(f"{server.url}/v2/prewarm", timeout=10).json()
        assert plan["policy"] == "predictive"
        assert "tiny-llm" in {row["model"] for row in plan["models"]}
    log = (repository.parent / "server.log").read_text()
    assert (
        "pre-warming with the predictive policy within MODEL_MEMORY_BUDGET_MB (2048 MiB); its plan: GET /v2/prewarm"
        in log
    )
