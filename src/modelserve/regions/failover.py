"""A planned move of a region's traffic to another, through the router's runtime API, and back.

``failover`` first checks that the target can take the traffic: it is ready (its servers answer
``/health/ready`` and the router sees them up) and it serves every model version the source serves,
each a verified replica (the target's SHA256SUMS, which replication writes only once every file is
verified, lists the version's files with the source's digests). Then it shifts: the source's servers
are set to ``drain`` (no new requests; HAProxy sends them to the next region by priority), it waits
until they hold no session, and sets them to ``maint``. Every step is reported with its duration.
``restore`` sets them ``ready`` again and waits until the router's checks find them up.

The router's own checks and retries fail over without anyone when a region dies or hangs; this is
for the moves an operator decides.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from modelserve.regions.config import Region, RegionsFile
from modelserve.regions.router import primaries, servers
from modelserve.regions.runtime import RuntimeAPI, ServerStat
from modelserve.regions.s3 import Store, is_missing, make_client
from modelserve.repository.remote import CHECKSUMS, parse_checksums

POLL_S = 0.02  # how often HAProxy's counters are read while waiting on them


class FailoverRefused(Exception):
    """The move would drop requests (the target is not ready, or lacks a model version); ``--force`` overrides."""


@dataclass(frozen=True)
class Step:
    """One thing the move did, how long it took, and what it found."""

    name: str
    seconds: float
    detail: str


@dataclass
class Report:
    """The steps of one move, in order."""

    steps: list[Step] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time the block; what it appends to the list it is given becomes the step's detail."""
        detail: list[str] = []
        started = time.monotonic()
        try:
            yield detail
        finally:
            self.steps.append(Step(name, time.monotonic() - started, "; ".join(detail)))

    @property
    def seconds(self) -> float:
        """The whole move's duration."""
        return sum(s.seconds for s in self.steps)


ModelVersions = set[tuple[str, str]]


def ready_endpoints(region: Region, client: httpx.Client) -> tuple[list[str], list[str]]:
    """``region``'s HTTP endpoints that answer ``/health/ready`` with 200, and why each other one does not."""
    ready: list[str] = []
    problems: list[str] = []
    for server in (s for s in servers(region) if not s.grpc):
        url = f"{'https' if server.tls else 'http'}://{server.address}"
        try:
            status = client.get(f"{url}/health/ready").status_code
        except httpx.HTTPError as exc:
            problems.append(f"{url}: {type(exc).__name__}")
            continue
        (ready if status == 200 else problems).append(url if status == 200 else f"{url}: {status}")
    return ready, problems


def served(urls: list[str], client: httpx.Client) -> ModelVersions | None:
    """The model versions the servers at ``urls`` serve (READY), or None when none of them answers."""
    found: ModelVersions | None = None
    for url in urls:
        try:
            response = client.post(f"{url}/v2/repository/index", json={"ready": True})
            response.raise_for_status()
        except httpx.HTTPError:
            continue
        entries: list[dict[str, Any]] = response.json()
        found = (found or set()) | {(e["name"], str(e.get("version", ""))) for e in entries}
    return found


def store_of(regions: RegionsFile, region: Region) -> Store:
    """``region``'s model store, on a client of its own."""
    return Store(region, regions.replication, make_client(region, regions.replication, pool=4))


def published(store: Store, models: set[str]) -> dict[str, dict[str, str]]:
    """Each of ``models``' SHA256SUMS in ``store`` (path -> sha256), empty for one it lacks."""
    found: dict[str, dict[str, str]] = {}
    for model in models:
        try:
            data, _ = store.read_small(store.key(model, CHECKSUMS))
        except ClientError as exc:
            if not is_missing(exc):
                raise
            data = b""
        found[model] = parse_checksums(data.decode(errors="replace"))
    return found


def _files(sums: dict[str, str], version: str) -> dict[str, str]:
    return {p: d for p, d in sums.items() if p.startswith(f"{version}/")}


def missing_versions(
    regions: RegionsFile, source: Region, target: Region, client: httpx.Client
) -> tuple[ModelVersions, list[str]]:
    """What the source serves, and each of those versions the target does not hold, with the reason."""
    source_urls = ready_endpoints(source, client)[0] or [f"http://{s.address}" for s in servers(source) if not s.grpc]
    wanted = served(source_urls, client)
    target_serves = served(ready_endpoints(target, client)[0], client) or set()
    problems: list[str] = []
    try:
        stores = store_of(regions, source), store_of(regions, target)
        if wanted is None:  # the source answers no one: what its store publishes is what it served
            wanted = _published_versions(stores[0])
        models = {m for m, _ in wanted}
        ours, theirs = published(stores[0], models), published(stores[1], models)
    except (BotoCoreError, ClientError, ValueError) as exc:
        return wanted or set(), [f"cannot read the model stores: {exc}"]
    for model, version in sorted(wanted):
        truth, copy = _files(ours[model], version), _files(theirs[model], version)
        if not copy:
            problems.append(f"{model}:{version} is not published in {target.name}'s store")
        elif truth and copy != truth:
            problems.append(f"{model}:{version} in {target.name} differs from {source.name}'s SHA256SUMS")
        elif (model, version) not in target_serves:
            problems.append(f"{model}:{version} is not loaded (READY) on {target.name}'s servers")
    return wanted, problems


def _published_versions(store: Store) -> ModelVersions:
    prefix = store.region.store.prefix
    root = f"{prefix}/" if prefix else ""
    answer = store.call(store.client.list_objects_v2, Bucket=store.bucket, Prefix=root, Delimiter="/")
    models = {str(p["Prefix"]).rstrip("/").rsplit("/", 1)[-1] for p in answer.get("CommonPrefixes", [])}
    return {(m, p.split("/", 1)[0]) for m, sums in published(store, models).items() for p in sums if "/" in p}


def _rows(api: RuntimeAPI, region: Region) -> list[ServerStat]:
    names = {s.name for s in servers(region)}
    return [row for row in api.stats() if row.server in names]


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def failover(
    regions: RegionsFile,
    api: RuntimeAPI,
    source_name: str,
    target_name: str,
    *,
    force: bool = False,
    drain_timeout_s: float = 30.0,
    client: httpx.Client | None = None,
) -> Report:
    """Move ``source_name``'s traffic to ``target_name``; a FailoverRefused (unless ``force``) says why not."""
    source, target = regions.region(source_name), regions.region(target_name)
    if source.name == target.name:
        raise FailoverRefused("the source and the target are the same region")
    report = Report()
    with client or httpx.Client(timeout=5.0) as http:
        with report.step(f"check {target.name} is ready") as detail:
            held = {server for _, server in primaries(regions, target.name)}
            up = [r.server for r in _rows(api, target) if r.up and r.server in held]  # the router first: it must answer
            ready, problems = ready_endpoints(target, http)
            detail.append(f"{len(ready)} endpoint(s) ready, router sees {len(set(up))} server(s) up")
            if (not ready or not up) and not force:
                why = "; ".join(problems) or "the router sees none of its servers up"
                raise FailoverRefused(f"{target.name} is not ready ({why}); pass --force to move anyway")
        with report.step(f"check {target.name} holds every version {source.name} serves") as detail:
            wanted, problems = missing_versions(regions, source, target, http)
            detail.append(f"{len(wanted)} version(s) checked, {len(problems)} problem(s)")
            if problems and not force:
                raise FailoverRefused(f"{target.name} cannot take {source.name}'s traffic: {'; '.join(problems)}")
            detail.extend(problems)
    _shift(api, regions, source, report, drain_timeout_s)
    return report


def _shift(api: RuntimeAPI, regions: RegionsFile, source: Region, report: Report, drain_timeout_s: float) -> None:
    held = primaries(regions, source.name)
    with report.step(f"drain {source.name}") as detail:
        for backend, server in held:
            api.set_state(backend, server, "drain")
        detail.append(", ".join(f"{b}/{s}" for b, s in held))
    with report.step(f"wait until {source.name} has no sessions") as detail:
        drained = _wait(lambda: sum(r.sessions for r in _rows(api, source)) == 0, drain_timeout_s)
        left = sum(r.sessions for r in _rows(api, source))
        detail.append("none left" if drained else f"{left} session(s) still open after {drain_timeout_s:g} s")
    with report.step(f"maintenance {source.name}") as detail:
        for backend, server in held:
            api.set_state(backend, server, "maint")
        states = sorted({r.status for r in _rows(api, source)})
        detail.append(f"router says {', '.join(states)}")


def restore(
    regions: RegionsFile,
    api: RuntimeAPI,
    region_name: str,
    *,
    force: bool = False,
    up_timeout_s: float = 30.0,
    client: httpx.Client | None = None,
) -> Report:
    """Give ``region_name`` its traffic back: ready again once its servers are, and up once the router's
    checks pass."""
    region = regions.region(region_name)
    report = Report()
    with client or httpx.Client(timeout=5.0) as http, report.step(f"check {region.name} is ready") as detail:
        ready, problems = ready_endpoints(region, http)
        detail.append(f"{len(ready)} endpoint(s) ready")
        if not ready and not force:
            why = "; ".join(problems)
            raise FailoverRefused(f"{region.name} is not ready ({why}); pass --force to restore it anyway")
    held = primaries(regions, region.name)
    with report.step(f"ready {region.name}") as detail:
        for backend, server in held:
            api.set_state(backend, server, "ready")
        detail.append(", ".join(f"{b}/{s}" for b, s in held))
    with report.step(f"wait until the router sees {region.name} up") as detail:
        names = {s for _, s in held}
        up = _wait(lambda: all(r.up for r in _rows(api, region) if r.server in names), up_timeout_s)
        detail.append("up" if up else f"not up after {up_timeout_s:g} s: its health checks fail")
    return report
