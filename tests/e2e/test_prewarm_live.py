"""The pre-warming policies on real servers: a short schedule replayed in real time in on-demand mode with a
budget too small for every model, cold starts read from each server's /metrics and set against the
simulator's on the same arrivals (``benchmarks/prewarm_live_replay.py``; ``python -m
benchmarks.prewarm_live`` replays an hour of a generated trace the same way, docs/PREWARM.md).

Eight ONNX models of 2 to 16 MiB are asked for in turn, each every PERIOD_S, with a budget for about five:
a cycle longer than the cache, where lru evicts exactly the model needed next and is cold on every request.
``predictive`` keeps the four smallest loaded (they cost least memory for the cold starts they save) and
cycles the others through the rest; from a model's fifth request (four intervals) it sees its schedule, and
pre-loads the large ones before their sixth. A generated trace would take minutes to show this: its
schedules' periods are a minute and more. `predictive` pre-loads only when the unload after a request frees
the model for MIN_GAP (2 s) before a pre-load that ends SAFETY (1 s) ahead of the next request, less the
schedule's jitter and the load time: about 3.1 s of period on an idle machine. PERIOD_S leaves some 0.3 s
for the jitter the server sees in arrival times on a busy one (tens of ms), which its simulation from the
send times does not see. The sizes are far enough apart (35 % from one to the next) that `predictive` ranks
the models by them alike live and simulated: it values a model by its load time per MB, and the load times
the server measures vary by half and more between loads on a busy machine.
"""

from __future__ import annotations

import pytest

from benchmarks.prewarm_live_replay import Comparison, build_repository, live_run

MODELS = 8
SIZES_MIB = {f"s{i}": 2.0 * 1.35**i for i in range(MODELS)}  # 2 to 16 MiB
PERIOD_S = 3.4  # between two requests of one model; the trace sends one request every PERIOD_S / MODELS
ROUNDS = 6
BUDGET_MIB = 0.6 * sum(SIZES_MIB.values())  # about five of the eight
TOLERANCE = 0.10  # live cold starts within this share of the simulated ...
SLACK = 2  # ... or within this many, for the few a replay this short has


@pytest.fixture(scope="module")
def comparisons(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Comparison]:
    """Each policy's live and simulated figures over the same schedule, on a fresh server each."""
    workdir = tmp_path_factory.mktemp("prewarm")
    widths = build_repository(workdir / "repository", SIZES_MIB)
    names = list(SIZES_MIB)
    arrivals = [(k * PERIOD_S / MODELS, names[k % MODELS]) for k in range(MODELS * ROUNDS)]
    return live_run(workdir / "repository", workdir, arrivals, widths, BUDGET_MIB, ("lru", "predictive"))


@pytest.mark.parametrize("policy", ["lru", "predictive"])
def test_live_cold_starts_are_the_simulators_on_the_same_arrivals(
    comparisons: dict[str, Comparison], policy: str
) -> None:
    live = comparisons[policy]
    assert not live.errors
    assert live.requests == MODELS * ROUNDS
    simulated = live.simulated.cold_starts
    assert abs(live.cold_starts - simulated) <= max(TOLERANCE * simulated, SLACK), live.cold_by_model


def test_lru_is_cold_on_every_request_of_a_cycle_longer_than_its_cache(comparisons: dict[str, Comparison]) -> None:
    assert comparisons["lru"].cold_starts == MODELS * ROUNDS


def test_predictive_keeps_the_small_models_and_pre_loads_the_large_ones(comparisons: dict[str, Comparison]) -> None:
    live = comparisons["predictive"]
    assert live.cold_starts <= 0.6 * comparisons["lru"].cold_starts, live.cold_by_model  # 24 of 48 simulated
    assert live.preloads >= MODELS // 4, live.preloads
