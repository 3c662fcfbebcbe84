"""The policy table of docs/PREWARM.md for one seed: every family, every policy, and the targets.

    .venv/bin/python -m benchmarks.prewarm_targets --seed 6 --held-out [--jobs 2] [FAMILY ...]

Each family is generated as ``modelserve prewarm generate FAMILY --seed N [--held-out]`` makes it and
replayed with a budget of a quarter of its models' total size (``office``: 30 %), as ``modelserve prewarm
simulate ... --policy all`` replays it; the output is the Markdown table the document quotes. Families replay in
parallel processes, since one replay under ``predictive`` takes up to a minute.

Each family ends with the row ``bound``: the cold starts no policy can expect to go below on it
(``modelserve.prewarm.bound``, with hybrid-histogram's idle memory-time as the cap), so that a target
out of reach shows as such.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

from modelserve.prewarm.bound import Bound, cold_start_bound
from modelserve.prewarm.generators import DAY, FAMILIES, Shape, generate, held_out, unforeseeable
from modelserve.prewarm.live import POLICIES
from modelserve.prewarm.simulator import Result, simulate

HEADER = (
    "| family | policy | requests | cold starts | cold rate | x lru | idle GB·h | memory GB·h | loads "
    "| p50 / p99 delay s | targets |\n|---|---|---|---|---|---|---|---|---|---|---|"
)
GB_HOURS = 3.6e6  # MB·s in a GB·h, as `modelserve prewarm simulate` prints it
DAYS = 7.0  # `modelserve prewarm generate`'s default
BUDGET_SHARE = {"office": 0.3}  # of the models' total size; a quarter for the families not named
TARGET = {"office": 0.7}  # predictive's cold-start rate over lru's to meet; half for the families not named


Replay = tuple[float, list[Result], Bound]


def replay(family: str, seed: int, shifted: bool) -> Replay:
    """The budget, each policy's result on one family, and the bound."""
    shape = held_out(Shape()) if shifted else None
    trace, models = generate(family, seed=seed, days=DAYS, shape=shape)
    budget = round(sum(m.size_mb for m in models.values()) * BUDGET_SHARE.get(family, 0.25))
    results = [simulate(trace, models, budget, policy()) for policy in POLICIES.values()]
    hybrid = next(r for r in results if r.policy == "hybrid-histogram")
    truths = unforeseeable(family, seed=seed, days=DAYS, shape=shape)
    return budget, results, cold_start_bound(truths, models, budget, DAYS * DAY, hybrid.idle_memory_mb_seconds)


def targets(ours: Result, lru: Result, hybrid: Result, ratio: float) -> str:
    """The three targets, each ticked or crossed."""
    marks = (
        (f"≤{ratio:g}x lru", ours.cold_start_rate <= ratio * lru.cold_start_rate),
        ("< hybrid", ours.cold_start_rate < hybrid.cold_start_rate),
        ("idle ≤ hybrid", ours.idle_memory_mb_seconds <= hybrid.idle_memory_mb_seconds),
    )
    return ", ".join(f"{label} {'✓' if met else '✗'}" for label, met in marks)


def rows(family: str, budget: float, results: list[Result], bound: Bound) -> list[str]:
    """One table row per policy, the targets on ``predictive``'s row, then the bound's."""
    by_name = {r.policy: r for r in results}
    lru = by_name["lru"]
    goal = TARGET.get(family, 0.5)
    out = []
    for index, r in enumerate(results):
        label = f"{family} ({budget:.0f} MB)" if index == 0 else ""
        ratio = r.cold_start_rate / lru.cold_start_rate if lru.cold_start_rate else float("nan")
        mark = targets(r, lru, by_name["hybrid-histogram"], goal) if r.policy == "predictive" else ""
        out.append(
            f"| {label} | {r.policy} | {r.requests} | {r.cold_starts} | {r.cold_start_rate:.4f} | {ratio:.2f} "
            f"| {r.idle_memory_mb_seconds / GB_HOURS:.0f} | {r.memory_mb_seconds / GB_HOURS:.0f} | {r.loads} "
            f"| {r.cold_start_delay_p50_s:.1f} / {r.cold_start_delay_p99_s:.1f} | {mark} |"
        )
    floor = bound.cold_starts
    out.append(
        f"| | bound | | {floor:.0f} | {floor / lru.requests:.4f} | {floor / lru.cold_starts:.2f} "
        f"| | | | | {f'{goal:g}x lru out of reach' if floor > goal * lru.cold_starts else ''} |"
    )
    return out


def main() -> None:
    """Replay the families and print the table and the commands that reproduce each row."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", default=list(FAMILIES), metavar="FAMILY", help=", ".join(FAMILIES))
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--held-out", action="store_true", help="the held-out family parameters")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if unknown := [f for f in args.families if f not in FAMILIES]:
        parser.error(f"unknown family {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(replay, f, args.seed, args.held_out) for f in args.families]
        replays = [future.result() for future in futures]
    print(HEADER)
    for family, (budget, results, bound) in zip(args.families, replays, strict=True):
        print("\n".join(rows(family, budget, results, bound)))
    flag = " --held-out" if args.held_out else ""
    print("\n```bash")
    for family, (budget, _, _) in zip(args.families, replays, strict=True):
        out = f"runs/seed-{args.seed}/{family}"
        print(f"modelserve prewarm generate {family} --seed {args.seed}{flag} --out {out}")
        print(
            f"modelserve prewarm simulate --trace {out}/trace.csv --models {out}/models.csv "
            f"--memory-budget-mb {budget:.0f} --policy all"
        )
    print("```")


if __name__ == "__main__":
    main()
