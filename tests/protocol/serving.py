"""Helpers of the protocol tests: an in-process server with its lifespan, and the binary tensor layout.

Bodies are built the way Triton's clients build them: a JSON header, then each binary tensor's raw
bytes in input order, with the header's length in ``Inference-Header-Content-Length``.
"""

from __future__ import annotations

import struct
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families
from starlette.exceptions import StarletteDeprecationWarning

from modelserve.config import Settings
from modelserve.observability.tracing import Tracing
from modelserve.server.app import create_app
from modelserve.types import numpy_dtype

with warnings.catch_warnings():
    # starlette.testclient warns once, on import, that it prefers httpx2; the project pins httpx, which works.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = [
    "HEADER_LENGTH",
    "Samples",
    "TestClient",
    "binary_request",
    "metric_value",
    "metrics_of",
    "pack_bytes",
    "serving",
    "split_response",
    "tensor",
    "v2_body",
    "wait_until",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
READY_TIMEOUT_S = 30.0
_LENGTH = struct.Struct("<I")


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``condition`` until it holds, failing with ``what`` once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_s:g} s waiting for {what}")
        time.sleep(0.01)


@contextmanager
def serving(
    repository: Path,
    ready_path: str = "/v2/health/ready",
    tracing: Tracing | None = None,
    ready_headers: dict[str, str] | None = None,
    **settings: Any,
) -> Iterator[TestClient]:
    """The app on ``repository`` with its lifespan running, once startup loading has finished.

    Explicit control mode loading every model is the default, and no gRPC port (the HTTP app is
    what these tests drive); ``settings`` override any field. ``ready_path`` is the probe awaited,
    asked with ``ready_headers`` (credentials, when the probe is not open).
    Without ``tracing``, tracing is off whatever the environment says.
    """
    options: dict[str, Any] = {"model_control_mode": "explicit", "load_models": ["*"], "grpc_port": 0, **settings}
    app = create_app(Settings(model_repository=str(repository), **options), tracing=tracing or Tracing())
    with TestClient(app) as client:
        wait_until(
            lambda: client.get(ready_path, headers=ready_headers).status_code == 200, f"GET {ready_path} to answer 200"
        )
        yield client


Samples = dict[str, list[tuple[dict[str, str], float]]]


def metrics_of(client: TestClient) -> Samples:
    """Every sample of /metrics, by sample name, as (labels, value)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def metric_value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``; 0 when there is none."""
    return sum(value for found, value in samples.get(name, []) if labels.items() <= found.items())


def tensor(name: str, datatype: str, shape: Any, data: Any = None, **parameters: Any) -> dict[str, Any]:
    """One V2 input as JSON; ``parameters`` (``binary_data_size``, ...) are added when given."""
    document: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if data is not None:
        document["data"] = data
    if parameters:
        document["parameters"] = parameters
    return document


def v2_body(*inputs: dict[str, Any], **document: Any) -> bytes:
    """A JSON infer request body of ``inputs`` plus any other top-level fields."""
    return orjson.dumps({"inputs": list(inputs), **document})


def pack_bytes(*items: bytes) -> bytes:
    """BYTES elements as the binary extension sends them: a 4-byte little-endian length, then the bytes."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def binary_request(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, int]:
    """A binary-extension body: the JSON header followed by ``chunks``, and the header's length."""
    head = orjson.dumps(header)
    return head + b"".join(chunks), len(head)


def split_response(body: bytes, header_length: int | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a V2 response (JSON, or JSON header plus binary tensors) into its header and arrays by name.

    Fails when the binary part is not exactly the sum of the outputs' ``binary_data_size``.
    """
    end = len(body) if header_length is None else header_length
    header = orjson.loads(body[:end])
    arrays: dict[str, np.ndarray] = {}
    offset = end
    for output in header["outputs"]:
        name, datatype, shape = output["name"], output["datatype"], output["shape"]
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            data = [item.encode() for item in output["data"]] if datatype == "BYTES" else output["data"]
            arrays[name] = np.array(data, dtype=numpy_dtype(datatype)).reshape(shape)
            continue
        raw = body[offset : offset + size]
        assert len(raw) == size, f"output '{name}' claims {size} bytes but the body holds {len(raw)}"
        offset += size
        if datatype == "BYTES":
            arrays[name] = np.array(_unpack_bytes(raw), dtype=object).reshape(shape)
        else:
            arrays[name] = np.frombuffer(raw, dtype=numpy_dtype(datatype)).reshape(shape)
    assert offset == len(body), f"{len(body) - offset} bytes follow the last binary output"
    return header, arrays


def _unpack_bytes(raw: bytes) -> list[bytes]:
    items, position = [], 0
    while position < len(raw):
        (length,) = _LENGTH.unpack_from(raw, position)
        items.append(raw[position + 4 : position + 4 + length])
        position += 4 + length
    return items
