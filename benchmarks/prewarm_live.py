"""Live equals simulated: an hour of a generated trace replayed in real time against real servers with a
real memory budget, one server per policy, and the simulator replayed on the same arrivals; cold starts side
by side (docs/PREWARM.md, "Live replay"). It takes the slice's length in real time.

    .venv/bin/python -m benchmarks.prewarm_live [--family mixed] [--seed 1] [--start 36000] [--length 3600]
        [--policy lru --policy predictive] [--models 100] [--budget-share 0.25] [--size-scale 40]

The slice is ``modelserve prewarm generate FAMILY --seed N --models M``'s trace from ``--start`` for
``--length`` seconds. The default, mixed seed 1 from 10:00 on its first day, has every pattern the policies
read (schedules, bursts, followers, requests at random at a rate that follows the day): about
1200 requests to 66 models, 30 % of them cold under lru, enough for a 10 % difference to be a few
dozen cold starts. Its models' sizes are the trace catalogue's divided by ``--size-scale`` (300 MB becomes
7.5 MiB, the largest 100 MiB), built as real ONNX models that load in tens to hundreds of ms; the budget is
``--budget-share`` of their total, as in the simulated tables. The replay itself is
``benchmarks/prewarm_live_replay.py``; this prints the settings, the figures, and the commands that
reproduce each simulated figure from the files it writes.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

import modelserve
from benchmarks.prewarm_live_replay import Arrivals, Comparison, build_repository, command, live_run
from modelserve.models.budget import UNMEASURED_FACTOR
from modelserve.prewarm.generators import FAMILIES, generate
from modelserve.prewarm.live import POLICIES
from modelserve.prewarm.traces import write_models, write_trace

ROOT = Path(__file__).resolve().parent.parent
REPOSITORIES = ROOT / ".bench" / "prewarm-live"  # built once per family, seed, model count and scale
RESULTS = ROOT / "benchmarks" / "results" / "prewarm-live"
TOLERANCE = 0.10  # live cold starts within this share of the simulated


def sliced(
    family: str, seed: int, models: int, start_s: float, length_s: float, size_scale: float
) -> tuple[Arrivals, dict[str, float]]:
    """The slice's arrivals (seconds from its start) and each of its models' size in MiB."""
    trace, catalogue = generate(family, seed=seed, models=models)
    arrivals = [(t - start_s, m) for t, m in zip(trace.times, trace.models, strict=True) if 0 <= t - start_s < length_s]
    sizes = {m: catalogue[m].size_mb / size_scale for m in sorted({m for _, m in arrivals})}
    return arrivals, sizes


def main(argv: list[str]) -> int:
    """Replay the slice, print live against simulated; 1 when a policy is off by more than TOLERANCE."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=FAMILIES, default="mixed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=float, default=10 * 3600.0, help="slice start, trace seconds")
    parser.add_argument("--length", type=float, default=3600.0, help="slice length, seconds (real time)")
    parser.add_argument("--policy", action="append", choices=list(POLICIES), help="repeatable; lru and predictive")
    parser.add_argument("--models", type=int, default=100, help="models in the generated trace")
    parser.add_argument("--budget-share", type=float, default=0.25, help="budget over the slice's models' total")
    parser.add_argument("--size-scale", type=float, default=40.0, help="trace MB per MiB of ONNX weights")
    args = parser.parse_args(argv)
    policies = list(dict.fromkeys(args.policy or ["lru", "predictive"]))

    arrivals, sizes = sliced(args.family, args.seed, args.models, args.start, args.length, args.size_scale)
    if not arrivals:
        parser.error("the slice has no arrivals")
    budget = round(args.budget_share * sum(sizes.values()), 2)
    if UNMEASURED_FACTOR * max(sizes.values()) > budget:  # what a server reserves for a first load
        parser.error(f"the slice's largest model ({max(sizes.values()):.1f} MiB) cannot load in {budget} MiB")
    name = f"{args.family}-s{args.seed}-m{args.models}-x{args.size_scale:g}"
    repository = REPOSITORIES / name
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)

    head = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    print(f"python -m benchmarks.prewarm_live {shlex.join(argv)}   (checkout {head.stdout.strip() or 'unknown'})")
    print(f"modelserve from {Path(modelserve.__file__).parent}")
    print(
        f"slice: {args.family} seed {args.seed}, {args.models} models, trace seconds {args.start:g} to "
        f"{args.start + args.length:g}: {len(arrivals)} requests to {len(sizes)} models, "
        f"{sum(sizes.values()):.0f} MiB of weights ({min(sizes.values()):.2f} to {max(sizes.values()):.1f} MiB), "
        f"budget {budget} MiB"
    )
    started = time.monotonic()
    widths = build_repository(repository, sizes)
    print(f"repository {repository} ready in {time.monotonic() - started:.0f} s; servers, one per policy:")
    for policy in policies:
        print(f"  {command(repository, budget, policy)}")
    sys.stdout.flush()

    started = time.monotonic()
    results = live_run(repository, out, arrivals, widths, budget, policies)
    print(f"replayed in {time.monotonic() - started:.0f} s; output in {out}")
    report(results, out, budget)
    return 0 if all(abs(r.ratio - 1) <= TOLERANCE for r in results.values()) else 1


def report(results: dict[str, Comparison], out: Path, budget: float) -> None:
    """The table, and for each policy the files and command that give its simulated figures again."""
    print(
        "\n| policy | requests | errors | cold starts live | simulated | live / simulated | loads live / sim "
        "| evictions live / sim | pre-loads live |\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in results.values():
        sim = r.simulated
        print(
            f"| {r.policy} | {r.requests} | {len(r.errors)} | {r.cold_starts} | {sim.cold_starts} | {r.ratio:.3f} "
            f"| {r.loads} / {sim.loads} | {r.evictions} / {sim.evictions} | {r.preloads} |"
        )
    if len(results) > 1 and "lru" in results:
        lru = results["lru"]
        for r in results.values():
            if r.policy != "lru":
                live = r.cold_starts / lru.cold_starts if lru.cold_starts else float("nan")
                simulated = r.simulated.cold_starts / lru.simulated.cold_starts if lru.simulated.cold_starts else 0.0
                print(f"{r.policy} x lru: live {live:.2f}, simulated {simulated:.2f}")
    print(f"\nwithin {TOLERANCE:.0%}: " + ", ".join(f"{p} {abs(r.ratio - 1) <= TOLERANCE}" for p, r in results.items()))
    for r in results.values():
        write_trace(r.sent, out / f"sent-{r.policy}.csv")
        write_models(r.catalogue, out / f"models-{r.policy}.csv")
        apart = {m: pair for m, pair in r.cold_by_model.items() if pair[0] != pair[1]}
        (out / f"cold-by-model-{r.policy}.csv").write_text(
            "model,live,simulated,size_mib,load_seconds\n"
            + "".join(
                f"{m},{live},{sim},{r.catalogue[m].size_mb:.2f},{r.catalogue[m].load_seconds:.3f}\n"
                for m, (live, sim) in r.cold_by_model.items()
            )
        )
        print(f"{r.policy}: {len(apart)} models whose live and simulated cold starts differ: {apart}")
        print(
            f"modelserve prewarm simulate --trace {out}/sent-{r.policy}.csv --models {out}/models-{r.policy}.csv "
            f"--memory-budget-mb {budget} --policy {r.policy}"
        )
        for error in r.errors[:5]:
            print(f"  {r.policy} error: {error}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
