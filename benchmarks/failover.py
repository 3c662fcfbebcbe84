"""Failover through HAProxy under closed-loop load: a planned move, a killed region, a hung region.

    .venv/bin/python -m benchmarks.failover [--clients 16] [--requests 6000] [--server-timeout 1] [--json]

Two regions (us-east-1 first by priority, eu-west-1 second), each a `modelserve serve` on its own moto
S3 store serving the same `scale` model, behind HAProxy configured by `modelserve regions
router-config` (checks every 100 ms, fall 2, error-limit 1, 3 retries with redispatch). Clients send
``--requests`` requests per scenario with no X-Client-Region header, so us-east-1 serves them until:

- ``planned``: `modelserve regions failover --from-region us-east-1 --to-region eu-west-1` (in process);
- ``killed``: us-east-1's server gets SIGKILL;
- ``hung``: us-east-1's server gets SIGSTOP (and SIGCONT at the end).

Reported per scenario: requests and rate, requests refused (no answer, or an error status) and answers
cut after their head (the server stopped between writing an answer's head and its body: HAProxy had
forwarded the head, so no proxy can retry it), latency percentiles and the worst, and the switch time:
for ``planned`` the whole move (drain, wait until no session, maintenance), for the others from the
signal until HAProxy marks the region down. HAProxy's own drain time (``set server ... state drain``
until the region holds no session), measured in the planned run, is the floor to compare them with.
Not part of `make test`: it needs minutes of a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modelserve.regions.config import load_regions  # noqa: E402
from modelserve.regions.failover import failover  # noqa: E402
from tests.builders import scale_onnx  # noqa: E402 - the tests' model, servers, moto and router, from the checkout
from tests.e2e.server import RunningServer  # noqa: E402
from tests.regions.conftest import Endpoint, publish  # noqa: E402
from tests.regions.routing import (  # noqa: E402
    Router,
    Traffic,
    regional_servers,
    router_settings,
    running_router,
    write_regions,
)
from tests.s3 import running_s3  # noqa: E402

US, EU = "us-east-1", "eu-west-1"


def stores(stack: ExitStack, folder: Path) -> dict[str, Endpoint]:
    """A moto server per region, a bucket each, `scale` version 1 published in both."""
    model = scale_onnx(folder / "model.onnx").read_bytes()
    found = {}
    for name in (US, EU):
        url = stack.enter_context(running_s3(folder / f"{name}-moto.log"))
        endpoint = Endpoint(name, url, None, f"models-{name}")  # type: ignore[arg-type]  # no fault proxy here
        boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=endpoint.bucket)  # fmt: skip
        publish(endpoint, "scale", {"1": {"model.onnx": model}})
        found[name] = endpoint
    return found


def down_after(router: Router, started: float) -> float:
    """Seconds from ``started`` until HAProxy no longer counts us-east-1's server up."""
    while any(r.status == "UP" for r in router.api.stats() if r.server == f"{US}_0"):
        if time.monotonic() - started > 30:
            return float("nan")
        time.sleep(0.002)
    return time.monotonic() - started


def run(
    scenario: str, regions: dict[str, Endpoint], folder: Path, clients: int, requests: int, timeout_s: float
) -> dict[str, Any]:
    """One scenario on fresh servers and a fresh router."""
    folder.mkdir()
    with regional_servers(regions, folder) as servers, ExitStack() as stack:
        path = write_regions(folder / "regions.yaml", regions, servers)
        router = stack.enter_context(running_router(path, folder, router_settings(server_timeout_s=timeout_s)))
        event: Callable[[], dict[str, float]] = {
            "planned": lambda: planned(path, router),
            "killed": lambda: signalled(router, servers[US], signal.SIGKILL),
            "hung": lambda: signalled(router, servers[US], signal.SIGSTOP),
        }[scenario]
        try:
            with Traffic(router.url, clients=clients, max_seconds=120) as traffic:
                traffic.wait_for(requests // 3)
                timings = event()
                traffic.finish_after(requests - len(traffic.records))
        finally:
            if scenario == "hung":
                os.kill(servers[US].process.pid, signal.SIGCONT)
    records = traffic.records
    elapsed = records[-1].started + records[-1].seconds - records[0].started
    latencies = np.array([r.seconds for r in records]) * 1000
    return {
        "scenario": scenario,
        "requests": len(records),
        "per_second": round(len(records) / elapsed),
        "refused": sum(1 for r in records if not r.ok and not r.cut),
        "cut": sum(1 for r in records if r.cut),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "max_ms": round(float(latencies.max()), 1),
        **{k: round(v * 1000, 1) for k, v in timings.items()},
    }


def planned(path: Path, router: Router) -> dict[str, float]:
    report = failover(load_regions(path), router.api, US, EU)
    steps = {s.name: s.seconds for s in report.steps}
    shift = steps[f"drain {US}"] + steps[f"wait until {US} has no sessions"] + steps[f"maintenance {US}"]
    return {"switch_ms": shift, "haproxy_drain_ms": steps[f"wait until {US} has no sessions"]}


def signalled(router: Router, server: RunningServer, sig: signal.Signals) -> dict[str, float]:
    started = time.monotonic()
    os.kill(server.process.pid, sig)
    return {"switch_ms": down_after(router, started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=6000, help="Requests per scenario.")
    parser.add_argument("--server-timeout", type=float, default=1.0, help="HAProxy's timeout of one try (s).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.update(REGION_ACCESS_KEY="testing", REGION_SECRET_KEY="testing")
    folder = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    results = []
    with ExitStack() as stack:
        regions = stores(stack, folder)
        for scenario in ("planned", "killed", "hung"):
            results.append(run(scenario, regions, folder / scenario, args.clients, args.requests, args.server_timeout))
            print(f"{scenario}: {results[-1]}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    drain = results[0].get("haproxy_drain_ms", float("nan"))
    print("| scenario | requests | req/s | refused | cut | switch (ms) | HAProxy drain (ms) | p50 | p99 | max (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['scenario']} | {r['requests']} | {r['per_second']} | {r['refused']} | {r['cut']} | "
            f"{r['switch_ms']} | {drain} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |"
        )


if __name__ == "__main__":
    main()
