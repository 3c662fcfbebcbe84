"""Warming the models of a running server from the outside: requests built from each model's V2
metadata, sent until each model has answered ``count`` times, with the latencies they took.

This is what a pod's postStart hook runs (`modelserve warmup`), for models whose config.yaml has no
``warmup`` section, or to warm what lies between the client and the model as well: connection pools,
the server's own first requests.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import httpx
import orjson

from modelserve.bench.workload import Workload
from modelserve.types import datatype_of


@dataclass
class Warmed:
    """What warming one model took, or why it could not be warmed."""

    model: str
    latencies_ms: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def first_ms(self) -> float:
        """The first request's latency: the cold one, if the model was cold."""
        return self.latencies_ms[0] if self.latencies_ms else 0.0

    @property
    def median_ms(self) -> float:
        """The median latency of the requests after the first."""
        rest = self.latencies_ms[1:] or self.latencies_ms
        return statistics.median(rest) if rest else 0.0


def wait_until_ready(client: httpx.Client, timeout_s: float) -> bool:
    """Whether the server answered ready within ``timeout_s`` (a postStart hook starts with the server)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/v2/health/ready").status_code == 200:
                return True
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def ready_models(client: httpx.Client) -> list[str]:
    """The models the server serves now (READY in its repository index)."""
    index = client.post("/v2/repository/index", json={"ready": True}).raise_for_status().json()
    return sorted({entry["name"] for entry in index if entry.get("state") == "READY"})


def warm(client: httpx.Client, model: str, count: int, batch: int = 1) -> Warmed:
    """Send ``count`` inference requests to ``model``; a failure is reported, never raised."""
    result = Warmed(model)
    try:
        workload = Workload.from_server(str(client.base_url).rstrip("/"), model, batch, token=_token(client))
    except httpx.HTTPStatusError as exc:
        result.error = f"{exc.response.status_code}: {error_of(exc.response)}"
        return result
    except ValueError as exc:  # inputs of a datatype the generator cannot make up
        result.error = str(exc)
        return result
    tensors = [
        {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape), "data": array.reshape(-1)}
        for name, array in workload.inputs.items()
    ]
    body = orjson.dumps({"inputs": tensors}, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = {"Content-Type": "application/json"}
    for _ in range(count):
        started = time.perf_counter()
        response = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
        if response.status_code != 200:
            result.error = f"{response.status_code}: {error_of(response)}"
            return result
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
    return result


def _token(client: httpx.Client) -> str | None:
    value = client.headers.get("Authorization", "")
    return value.removeprefix("Bearer ") or None


def error_of(response: httpx.Response) -> str:
    """The server's ``error`` message, or the body as it came."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)
