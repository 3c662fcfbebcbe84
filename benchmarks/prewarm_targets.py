"""The policy table of docs/PREWARM.md for one seed: every family, every policy, and the targets.

    .venv/bin/python -m benchmarks.prewarm_targets --seed 6 --held-out [--jobs 2] [FAMILY ...]

Each family is generated as ``modelserve prewarm generate FAMILY --seed N [--held-out]`` makes it and
replayed with a budget of a quarter of its models' total size, as ``modelserve prewarm simulate ...
--policy all`` replays it; the output is the Markdown table the document quotes. Families replay in
parallel processes, since one replay under ``predictive`` takes up to a minute.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

from modelserve.prewarm.generators import FAMILIES, Shape, generate, held_out
from modelserve.prewarm.live import POLICIES
from modelserve.prewarm.simulator import Result, simulate

HEADER = (
    "| family | policy | requests | cold starts | cold rate | x lru | idle GB·h | memory GB·h | loads "
    "| p50 / p99 delay s | targets |\n|---|---|---|---|---|---|---|---|---|---|---|"
)
GB_HOURS = 3.6e6  # MB·s in a GB·h, as `modelserve prewarm simulate` prints it


def replay(family: str, seed: int, shifted: bool) -> tuple[float, list[Result]]:
    """The budget and each policy's result on one family."""
    trace, models = generate(family, seed=seed, shape=held_out(Shape()) if shifted else None)
    budget = round(sum(m.size_mb for m in models.values()) / 4)
    return budget, [simulate(trace, models, budget, policy()) for policy in POLICIES.values()]


def targets(ours: Result, lru: Result, hybrid: Result) -> str:
    """The three targets, each ticked or crossed."""
    marks = (
        ("≤0.5x lru", ours.cold_start_rate <= 0.5 * lru.cold_start_rate),
        ("< hybrid", ours.cold_start_rate < hybrid.cold_start_rate),
        ("idle ≤ hybrid", ours.idle_memory_mb_seconds <= hybrid.idle_memory_mb_seconds),
    )
    return ", ".join(f"{label} {'✓' if met else '✗'}" for label, met in marks)


def rows(family: str, budget: float, results: list[Result]) -> list[str]:
    """One table row per policy; the targets on ``predictive``'s row."""
    by_name = {r.policy: r for r in results}
    lru = by_name["lru"]
    out = []
    for index, r in enumerate(results):
        label = f"{family} ({budget:.0f} MB)" if index == 0 else ""
        ratio = r.cold_start_rate / lru.cold_start_rate if lru.cold_start_rate else float("nan")
        mark = targets(r, lru, by_name["hybrid-histogram"]) if r.policy == "predictive" else ""
        out.append(
            f"| {label} | {r.policy} | {r.requests} | {r.cold_starts} | {r.cold_start_rate:.4f} | {ratio:.2f} "
            f"| {r.idle_memory_mb_seconds / GB_HOURS:.0f} | {r.memory_mb_seconds / GB_HOURS:.0f} | {r.loads} "
            f"| {r.cold_start_delay_p50_s:.1f} / {r.cold_start_delay_p99_s:.1f} | {mark} |"
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
    for family, (budget, results) in zip(args.families, replays, strict=True):
        print("\n".join(rows(family, budget, results)))
    flag = " --held-out" if args.held_out else ""
    print("\n```bash")
    for family, (budget, _) in zip(args.families, replays, strict=True):
        out = f"runs/seed-{args.seed}/{family}"
        print(f"modelserve prewarm generate {family} --seed {args.seed}{flag} --out {out}")
        print(
            f"modelserve prewarm simulate --trace {out}/trace.csv --models {out}/models.csv "
            f"--memory-budget-mb {budget:.0f} --policy all"
        )
    print("```")


if __name__ == "__main__":
    main()
