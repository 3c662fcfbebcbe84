"""Compressed infer requests (``Content-Encoding: gzip|deflate``): large ones answer correctly and are
inflated on a worker thread, never on the event loop; small ones stay on the loop, where a thread hop
would cost more than the inflating."""

from __future__ import annotations

import asyncio
import gzip
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from modelserve.protocol import v2_codec
from tests.builders import scale_onnx, write_config
from tests.protocol.serving import HEADER_LENGTH, TestClient, binary_request, serving, split_response

FEATURES = 1024  # one row: 4 KiB of FP32
ROWS = 1024  # a large tensor: 4 MiB


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A server with one model, y = 2x over FP32 [batch, 1024], batches of up to 1024 rows."""
    repository = tmp_path_factory.mktemp("decompression")
    scale_onnx(repository / "scale" / "1" / "model.onnx", factor=2.0, features=FEATURES)
    write_config(repository / "scale", f"max_batch_size: {ROWS}\n")
    with serving(repository) as client:
        yield client


class Inflations:
    """Each call of ``v2_codec.decompress`` the server makes: its output limit, and whether an event
    loop runs on the thread that made it. The real function does the work."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, bool, str]] = []
        real = v2_codec.decompress

        def recorded(body: bytes, encoding: str | None, limit: int) -> bytes:
            self.calls.append((limit, _loop_runs_here(), threading.current_thread().name))
            return real(body, encoding, limit)

        monkeypatch.setattr(v2_codec, "decompress", recorded)

    def last(self) -> tuple[int, bool, str]:
        assert self.calls, "the server inflated nothing"
        return self.calls[-1]


def _loop_runs_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def inflations(monkeypatch: pytest.MonkeyPatch) -> Inflations:
    return Inflations(monkeypatch)


def _infer(client: TestClient, x: np.ndarray, encoding: str, compress: Callable[[bytes], bytes]) -> tuple[int, Any]:
    header = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": x.nbytes}}
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    body, length = binary_request(header, x.tobytes())
    compressed = compress(body)
    response = client.post(
        "/v2/models/scale/infer",
        content=compressed,
        headers={HEADER_LENGTH: str(length), "Content-Encoding": encoding},
    )
    assert response.status_code == 200, response.text
    _, arrays = split_response(response.content, int(response.headers[HEADER_LENGTH]))
    return len(compressed), arrays["y"]


COMPRESSIONS = pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)], ids=["gzip", "deflate"]
)


@COMPRESSIONS
def test_a_large_compressed_tensor_answers_correctly_and_is_inflated_off_the_loop(
    client: TestClient, inflations: Inflations, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    x = np.random.default_rng(0).standard_normal((ROWS, FEATURES)).astype(np.float32)  # barely compressible

    size, y = _infer(client, x, encoding, compress)

    assert size > v2_codec.INLINE_BODY_BYTES
    np.testing.assert_array_equal(y, x * 2)
    limit, on_loop, thread = inflations.last()
    assert not on_loop, f"a {size}-byte body was inflated on the event loop's thread ({thread})"
    assert limit == 64 * 1024 * 1024  # MAX_INPUT_SIZE_MB: the 413 limit is the same off the loop


def test_a_small_body_that_inflates_far_is_finished_off_the_loop(client: TestClient, inflations: Inflations) -> None:
    x = np.zeros((ROWS, FEATURES), np.float32)  # 4 MiB of zeros: a gzip body of a few kilobytes

    size, y = _infer(client, x, "gzip", gzip.compress)

    assert size <= v2_codec.INLINE_BODY_BYTES
    np.testing.assert_array_equal(y, x)
    (inline_limit, first_on_loop, _), (limit, on_loop, thread) = inflations.calls
    assert first_on_loop
    assert inline_limit == v2_codec.INLINE_OUTPUT_BYTES  # the loop stopped there
    assert not on_loop, f"the rest was inflated on the event loop's thread ({thread})"
    assert limit == 64 * 1024 * 1024


def test_a_small_body_stays_on_the_loop(client: TestClient, inflations: Inflations) -> None:
    x = np.arange(FEATURES, dtype=np.float32).reshape(1, FEATURES)

    size, y = _infer(client, x, "gzip", gzip.compress)

    assert size <= v2_codec.INLINE_BODY_BYTES
    np.testing.assert_array_equal(y, x * 2)
    ((_, on_loop, thread),) = inflations.calls
    assert on_loop, f"a {size}-byte body took a thread hop ({thread})"
