"""The pieces of a live replay: real ONNX models of given sizes, one server per pre-warming policy, the
arrivals sent in real time, cold starts read from each server's /metrics, and the simulator run on what was
sent. ``benchmarks/prewarm_live.py`` replays an hour of a generated trace with them;
``tests/e2e/test_prewarm_live.py`` a short schedule.

What makes live and simulated comparable:

- **The same arrivals.** The simulator replays each server's own send times (Unix time, as the server's
  policy reads the time of day), not the trace's: a request that waited for a free connection is simulated
  when it was sent.
- **The same models.** Before the replay every model is loaded and unloaded through the repository API, so
  that each server knows every footprint and load time, as the simulator does from the start: a new server
  reserves twice a model's file for a load it never measured, and the first ONNX model it loads counts ONNX
  Runtime's environment (some 30 MiB); both are a new server's, not the policy's. The simulator takes each
  model's size as the server measured it (``model_serving_model_memory_bytes`` once loaded) and its load
  time as the mean of its loads during the replay (``model_serving_model_load_duration_seconds``).
- **The same counts.** Cold starts, loads and evictions are the differences of the server's counters over
  the replay: the measuring loads are not counted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from modelserve.models.memory import MIB
from modelserve.prewarm.live import POLICIES
from modelserve.prewarm.policy import CacheView, Decision, ModelInfo, Policy
from modelserve.prewarm.simulator import Result, simulate
from modelserve.prewarm.traces import Trace
from tests.builders import matmul_onnx
from tests.e2e.server import RunningServer, serve

CONCURRENCY = 16  # requests in flight per server at most; one beyond waits, and is simulated when it was sent
REQUEST_TIMEOUT_S = 30.0
LEAD_S = 0.2  # the first arrival is sent this long after the replay starts, once every client is ready
GRACE_S = 60.0  # a replay not done this long after its last arrival was due fails
MEASURE_TRIES = 3  # loads of a model before the replay, while its footprint reads above SETTLED times its file
SETTLED = 1.1

Arrivals = Sequence[tuple[float, str]]  # (seconds from the start of the replay, model), in time order


def features_for(size_mib: float) -> int:
    """The width of a square FP32 MatMul whose weights take ``size_mib``."""
    return max(16, round(math.sqrt(size_mib * MIB / 4)))


def build_repository(root: Path, sizes_mib: dict[str, float]) -> dict[str, int]:
    """A model repository of one ``y = x @ W`` ONNX model per name, ``W`` of the size given; files already
    there are kept. Returns each model's input width."""
    widths = {name: features_for(size) for name, size in sizes_mib.items()}
    for name, width in widths.items():
        path = root / name / "1" / "model.onnx"
        if not path.exists():
            partial = matmul_onnx(path.with_suffix(".partial"), features=width)
            partial.rename(path)
    return widths


@contextmanager
def servers(
    repository: Path, workdir: Path, budget_mib: float, policies: Sequence[str]
) -> Iterator[dict[str, RunningServer]]:
    """One on-demand server per policy, all with ``budget_mib``, started at once and stopped at once."""
    options = ("--model-control-mode", "on-demand", "--model-memory-budget-mb", f"{budget_mib:.2f}")
    managers: dict[str, AbstractContextManager[RunningServer]] = {}
    for policy in policies:
        (workdir / policy).mkdir(parents=True, exist_ok=True)
        log = workdir / policy / "server.log"
        # Every request has been answered when the servers stop: nothing to drain.
        managers[policy] = serve(repository, log, *options, "--prewarm-policy", policy, env={"SHUTDOWN_GRACE_SEC": "0"})
    with ThreadPoolExecutor(len(policies)) as pool:
        starting = {policy: pool.submit(manager.__enter__) for policy, manager in managers.items()}
        running = {policy: future.result() for policy, future in starting.items() if future.exception() is None}
        try:
            for future in starting.values():
                future.result()  # the first that failed to start, once the others have
            yield running
        finally:
            list(pool.map(lambda policy: managers[policy].__exit__(None, None, None), running))


def command(repository: Path, budget_mib: float, policy: str) -> str:
    """The `modelserve serve` command line each server runs (ports left out)."""
    return (
        f"modelserve serve --model-repository {repository} --model-control-mode on-demand "
        f"--model-memory-budget-mb {budget_mib:.2f} --prewarm-policy {policy}"
    )


# -- reading a server ------------------------------------------------------------------------------------


Samples = dict[tuple[str, str], float]  # (sample name, model label) -> value summed over the other labels


def scrape(server: RunningServer) -> Samples:
    """Every sample of the server's /metrics, by name and model."""
    text = httpx.get(f"{server.url}/metrics", timeout=REQUEST_TIMEOUT_S).text
    samples: Samples = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, sample.labels.get("model", ""))] += sample.value
    return samples


def total(samples: Samples, name: str) -> float:
    """A sample summed over every model."""
    return sum(value for (sample, _), value in samples.items() if sample == name)


COLD_STARTS = "model_serving_cold_starts_total"
LOADS = "model_serving_model_load_duration_seconds_count"
LOAD_SECONDS = "model_serving_model_load_duration_seconds_sum"
EVICTIONS = "model_serving_model_evictions_total"
PRELOADS = "model_serving_prewarm_loads_total"
MEMORY = "model_serving_model_memory_bytes"


def measure(server: RunningServer, repository: Path, models: Sequence[str]) -> dict[str, ModelInfo]:
    """Load and unload each model, one at a time: its footprint as the server measured it at load, and the
    load's duration. A footprint above SETTLED times the file is measured again, up to MEASURE_TRIES loads,
    and the least kept: the first load of a process counts ONNX Runtime's environment, and now and then a
    reading counts a few MiB the allocator keeps for the process, not for the model."""
    infos: dict[str, ModelInfo] = {}
    last = scrape(server)
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as client:
        for model in models:
            weights = (repository / model / "1" / "model.onnx").stat().st_size / MIB
            for _ in range(MEASURE_TRIES):
                answer = client.post(f"/v2/repository/models/{model}/load")
                assert answer.status_code == 200, answer.text
                now = scrape(server)
                size = now[(MEMORY, model)] / MIB
                seconds = now[(LOAD_SECONDS, model)] - last[(LOAD_SECONDS, model)]
                last = now
                if model not in infos or size < infos[model].size_mb:
                    infos[model] = ModelInfo(model, size, seconds)
                answer = client.post(f"/v2/repository/models/{model}/unload")
                assert answer.status_code == 200, answer.text
                if size <= SETTLED * weights:
                    break
    return infos


# -- the replay ------------------------------------------------------------------------------------------


@dataclass
class Sent:
    """What one server was sent: each request's Unix send time and model, and those that failed."""

    arrivals: list[tuple[float, str]]
    errors: list[str]


def replay(servers: dict[str, RunningServer], arrivals: Arrivals, widths: dict[str, int]) -> dict[str, Sent]:
    """Send ``arrivals`` to every server at once, in real time; fails once GRACE_S past the last one due."""
    bodies = {
        model: orjson.dumps({"inputs": [{"name": "x", "shape": [1, width], "datatype": "FP32", "data": [1.0] * width}]})
        for model, width in widths.items()
    }
    return asyncio.run(_replay({p: s.url for p, s in servers.items()}, arrivals, bodies))


async def _replay(urls: dict[str, str], arrivals: Arrivals, bodies: dict[str, bytes]) -> dict[str, Sent]:
    sent = {policy: Sent([], []) for policy in urls}
    gates = {policy: asyncio.Semaphore(CONCURRENCY) for policy in urls}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    headers = {"content-type": "application/json"}
    clients = {
        policy: httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits)
        for policy, url in urls.items()
    }

    async def one(policy: str, model: str) -> None:
        async with gates[policy]:
            sent[policy].arrivals.append((time.time(), model))
            try:
                answer = await clients[policy].post(f"/v2/models/{model}/infer", content=bodies[model], headers=headers)
            except httpx.HTTPError as exc:
                sent[policy].errors.append(f"{model}: {type(exc).__name__}: {exc}")
                return
            if answer.status_code != 200:
                sent[policy].errors.append(f"{model}: {answer.status_code} {answer.text[:200]}")

    loop = asyncio.get_running_loop()
    start = loop.time() + LEAD_S
    last = arrivals[-1][0] if arrivals else 0.0
    try:
        async with asyncio.timeout(LEAD_S + last + GRACE_S), asyncio.TaskGroup() as group:
            for offset, model in arrivals:
                await asyncio.sleep(max(0.0, start + offset - loop.time()))
                for policy in urls:
                    group.create_task(one(policy, model))
    finally:
        for client in clients.values():
            await client.aclose()
    return sent


# -- live against simulated ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One policy's figures on one replay: its server's and the simulator's on the same arrivals."""

    policy: str
    requests: int
    errors: list[str]
    cold_starts: int
    loads: int
    evictions: int
    preloads: int
    simulated: Result
    cold_by_model: dict[str, tuple[int, int]]  # model -> (live, simulated) cold starts, to see where they part
    catalogue: dict[str, ModelInfo]
    sent: Trace

    @property
    def ratio(self) -> float:
        """Live cold starts over simulated (1.0: equal)."""
        return self.cold_starts / self.simulated.cold_starts if self.simulated.cold_starts else math.inf


def live_run(
    repository: Path,
    workdir: Path,
    arrivals: Arrivals,
    widths: dict[str, int],
    budget_mib: float,
    policies: Sequence[str],
) -> dict[str, Comparison]:
    """Replay ``arrivals`` against one server per policy at once, then simulate each on what it was sent."""
    models = sorted(widths)
    with servers(repository, workdir, budget_mib, policies) as running, ThreadPoolExecutor(len(policies)) as pool:
        measuring = {p: pool.submit(measure, running[p], repository, models) for p in policies}
        measured = {p: future.result() for p, future in measuring.items()}
        before = {p: scrape(running[p]) for p in policies}
        sent = replay(running, arrivals, widths)
        after = {p: scrape(running[p]) for p in policies}
    out: dict[str, Comparison] = {}
    for policy in policies:
        delta = {key: value - before[policy].get(key, 0.0) for key, value in after[policy].items()}
        catalogue = {m: replace_load(info, delta) for m, info in measured[policy].items()}
        trace = Trace.from_arrivals(sent[policy].arrivals)
        counting = Counting(POLICIES[policy]())
        simulated = replace(simulate(trace, catalogue, budget_mib, counting), policy=policy)
        out[policy] = Comparison(
            policy=policy,
            requests=len(trace),
            errors=sent[policy].errors,
            cold_starts=round(total(delta, COLD_STARTS)),
            loads=round(total(delta, LOADS)),
            evictions=round(total(delta, EVICTIONS)),
            preloads=round(total(delta, PRELOADS)),
            simulated=simulated,
            cold_by_model={m: (round(delta.get((COLD_STARTS, m), 0.0)), counting.cold[m]) for m in models},
            catalogue=catalogue,
            sent=trace,
        )
    return out


def replace_load(info: ModelInfo, delta: Samples) -> ModelInfo:
    """``info`` with the mean load time of its loads in ``delta``, when it had any."""
    count = delta.get((LOADS, info.name), 0.0)
    if count < 1:
        return info
    return ModelInfo(info.name, info.size_mb, delta[(LOAD_SECONDS, info.name)] / count)


class Counting(Policy):
    """``policy`` unchanged, counting per model the requests that find it not READY: the simulator counts
    only their total."""

    name = "counting"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.cold: Counter[str] = Counter()

    def on_arrival(self, model: str, now: float, view: CacheView) -> Decision:
        self.cold[model] += not view.is_ready(model)
        return self.policy.on_arrival(model, now, view)

    def on_loaded(self, model: str, now: float, view: CacheView) -> Decision:
        return self.policy.on_loaded(model, now, view)

    def on_unloaded(self, model: str, now: float, view: CacheView) -> Decision:
        return self.policy.on_unloaded(model, now, view)

    def tick(self, now: float, view: CacheView) -> Decision:
        return self.policy.tick(now, view)

    def eviction_order(self, now: float, view: CacheView, candidates: Sequence[str]) -> list[str]:
        return self.policy.eviction_order(now, view, candidates)
