"""NVIDIA's own tritonclient example clients, unchanged (triton_examples/README.md), against a real server
started as `make run` starts it: each must exit 0 and print what it prints when it passes on Triton.

Most print a ``PASS`` line last. Two print none, and pass by exiting 0 after checking every answer:
simple_http_infer_client ends by printing the refusal of an unknown model it has just matched on
Triton's words, and simple_http_async_infer_client by printing each of its two answers' sums. One
exits 0 whether it passes or not, so its ``PASS`` line is the only proof: grpc_explicit_int_content_client.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import RunningServer

EXAMPLES = Path(__file__).parent / "triton_examples"
TIMEOUT_S = 60.0
# Each example, how a line it prints when it passes starts, and how many such lines it prints.
PASSES: dict[str, tuple[str, int]] = {
    "simple_http_infer_client": ("[404] Request for unknown model: 'wrong_model_name' is not found", 1),
    "simple_http_aio_infer_client": ("PASS: infer", 1),
    "simple_http_async_infer_client": ("15 - 1 = 14", 2),
    "simple_http_shm_client": ("PASS: system shared memory", 1),
    "simple_grpc_infer_client": ("PASS: infer", 1),
    "simple_grpc_aio_infer_client": ("PASS: grpc aio infer", 1),
    "simple_grpc_async_infer_client": ("PASS: Async infer", 1),
    "simple_grpc_shm_client": ("PASS: system shared memory", 1),
    "simple_grpc_custom_args_client": ("PASS: CustomArgs", 1),
    "simple_grpc_keepalive_client": ("PASS: KeepAlive", 1),
    "grpc_explicit_int_content_client": ("PASS: explicit int", 1),
}


def test_every_vendored_example_is_run() -> None:
    assert {path.stem for path in EXAMPLES.glob("*.py")} == set(PASSES)


@pytest.mark.parametrize("example", PASSES)
def test_example_passes_unchanged(server: RunningServer, example: str, tmp_path: Path) -> None:
    address = server.grpc_address if "grpc" in example else server.address
    try:
        run = subprocess.run(
            [sys.executable, str(EXAMPLES / f"{example}.py"), "-u", address],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{example} still ran after {TIMEOUT_S:g} s:\n{exc.stdout!r}\n{exc.stderr!r}") from None
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"{example} exited {run.returncode}:\n{output}"
    line, times = PASSES[example]
    printed = sum(text.startswith(line) for text in run.stdout.splitlines())
    assert printed == times, f"{example} printed {printed} lines starting {line!r}, not {times}:\n{output}"
