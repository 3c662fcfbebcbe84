"""Synthetic cross-region probes: each region's server asks the others, on an interval, whether they are
ready and to run a tiny inference, and exports what it saw.

A region is probed at its first HTTP endpoint in the regions file (its regional entry point): ``GET
/health/ready``, then ``POST /v2/models/<PROBE_MODEL>/infer`` with zeros shaped as the model's metadata
says (dynamic dimensions as 1), built once per region. Both are timed into a histogram per (source,
target, kind); the availability gauge is 1 while the last round's health check and inference both
succeeded. A failure is counted by reason, and logged when a region's state changes, not at every
round, so a region down for an hour writes two lines, not 240.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelserve.regions.config import Region, RegionsFile, load_regions
from modelserve.regions.router import servers

if TYPE_CHECKING:
    from modelserve.config import Settings

log = logging.getLogger("modelserve.regions.probes")

# 5 ms (the same zone) to 10 s: cross-region round trips are tens to hundreds of milliseconds.
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KINDS = ("health", "infer")


class ProbeMetrics:
    """The probes' metrics on ``registry`` (the server's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "model_serving_region_probe_duration_seconds",
            "Round trip of a synthetic probe from this server's region (source) to another (target): "
            "kind health is GET /health/ready, kind infer a tiny inference on PROBE_MODEL.",
            ["source", "target", "kind"],
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self.up = Gauge(
            "model_serving_region_probe_up",
            "1 while the last probe of the target region from the source region was ready and answered its "
            "inference; 0 otherwise.",
            ["source", "target"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.failures = Counter(
            "model_serving_region_probe_failures",
            "Probes that failed, by kind and reason: timeout, connection, status (an answer other than 200).",
            ["source", "target", "kind", "reason"],
            registry=registry,
        )


class ProbeFailed(Exception):
    """One probe did not succeed; ``reason`` is the metric's label, the message what happened."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Prober:
    """Probes every other region of ``regions`` from ``source``."""

    def __init__(
        self,
        regions: RegionsFile,
        source: str,
        model: str,
        metrics: ProbeMetrics,
        *,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        regions.region(source)  # a RegionsFileError names the regions the file knows
        self.source = source
        self.model = model
        self.metrics = metrics
        self.targets = {r.name: _entry_point(r) for r in regions.by_priority if r.name != source and _entry_point(r)}
        self.client = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._bodies: dict[str, bytes] = {}
        self._up: dict[str, bool | None] = dict.fromkeys(self.targets)
        for target in self.targets:  # every series exists from the start, so an absent one means no probe ran
            for kind in KINDS:
                self.metrics.duration.labels(source, target, kind)

    async def run(self, interval_s: float) -> None:
        """Probe every target each ``interval_s``, until cancelled."""
        while True:
            await self.round()
            await asyncio.sleep(interval_s)

    async def round(self) -> dict[str, bool]:
        """Probe every target once, at the same time; whether each is up."""
        results = await asyncio.gather(*(self.probe(target) for target in self.targets))
        return dict(zip(self.targets, results, strict=True))

    async def probe(self, target: str) -> bool:
        """Health, then inference, on ``target``; records both and says whether the region is up."""
        url = self.targets[target]
        try:
            await self._timed(target, "health", "GET", f"{url}/health/ready")
            body = self._bodies.get(target) or await self._body(target, url)
            await self._timed(target, "infer", "POST", f"{url}/v2/models/{self.model}/infer", body)
        except ProbeFailed as exc:
            self._state(target, False, str(exc))
            return False
        self._state(target, True, "")
        return True

    async def close(self) -> None:
        """Close the probes' connections."""
        await self.client.aclose()

    async def _timed(self, target: str, kind: str, method: str, url: str, body: bytes | None = None) -> None:
        started = time.perf_counter()
        try:
            headers = {"Content-Type": "application/json"} if body is not None else None
            response = await self.client.request(method, url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            self.metrics.failures.labels(self.source, target, kind, "timeout").inc()
            raise ProbeFailed("timeout", f"{kind} probe of {url} timed out") from exc
        except httpx.TransportError as exc:
            self.metrics.failures.labels(self.source, target, kind, "connection").inc()
            raise ProbeFailed("connection", f"{kind} probe of {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            self.metrics.failures.labels(self.source, target, kind, "status").inc()
            raise ProbeFailed("status", f"{kind} probe of {url} answered {response.status_code}: {response.text[:200]}")
        self.metrics.duration.labels(self.source, target, kind).observe(time.perf_counter() - started)

    async def _body(self, target: str, url: str) -> bytes:
        """The inference request for the model's inputs, built from its metadata on ``target``."""
        try:
            response = await self.client.get(f"{url}/v2/models/{self.model}")
        except httpx.HTTPError as exc:
            self.metrics.failures.labels(self.source, target, "infer", "connection").inc()
            raise ProbeFailed("connection", f"metadata of {self.model} on {url}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            self.metrics.failures.labels(self.source, target, "infer", "status").inc()
            raise ProbeFailed("status", f"metadata of {self.model} on {url} answered {response.status_code}")
        self._bodies[target] = tiny_request(response.json())
        return self._bodies[target]

    def _state(self, target: str, up: bool, why: str) -> None:
        self.metrics.up.labels(self.source, target).set(1 if up else 0)
        if self._up[target] is not up:
            if up:
                log.info("region %s answers probes from %s", target, self.source)
            else:
                log.warning("region %s fails probes from %s: %s", target, self.source, why)
        self._up[target] = up


def tiny_request(metadata: dict[str, Any]) -> bytes:
    """A V2 inference request of zeros (empty strings for BYTES) shaped as ``metadata``'s inputs say."""
    import orjson

    inputs = []
    for spec in metadata.get("inputs", []):
        shape = [d if d > 0 else 1 for d in spec["shape"]]
        count = 1
        for dim in shape:
            count *= dim
        zero: Any = "" if spec["datatype"] == "BYTES" else False if spec["datatype"] == "BOOL" else 0
        inputs.append({"name": spec["name"], "datatype": spec["datatype"], "shape": shape, "data": [zero] * count})
    return orjson.dumps({"inputs": inputs})


def _entry_point(region: Region) -> str:
    for server in servers(region):
        if not server.grpc:
            return f"{'https' if server.tls else 'http'}://{server.address}"
    return ""


def prober_from_settings(settings: Settings, registry: CollectorRegistry) -> Prober | None:
    """The prober PROBE_MODEL and REGIONS_FILE ask for, from REGION; None when either is unset."""
    if not settings.probe_model or settings.regions_file is None:
        return None
    regions = load_regions(settings.regions_file)  # checked by Settings: it names REGION
    return Prober(
        regions, settings.region, settings.probe_model, ProbeMetrics(registry), timeout_s=settings.probe_timeout_sec
    )
