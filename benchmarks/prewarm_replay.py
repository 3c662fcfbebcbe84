"""How long the pre-warming simulator takes to replay a week of 100 models, per policy and trace family.

    .venv/bin/python -m benchmarks.prewarm_replay [FAMILY ...]

Each family is generated with seed 1 (the tuning set of docs/PREWARM.md) and replayed with a budget of a
quarter of its models' total size; the table gives requests, replay seconds and requests per second.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

from modelserve.prewarm.cli import POLICIES
from modelserve.prewarm.generators import FAMILIES, generate
from modelserve.prewarm.simulator import simulate


def main(families: list[str]) -> None:
    """Replay each family under each policy and print the timings."""
    table = Table("family", "requests", *(f"{name} s" for name in POLICIES), title="replay of 7 days, 100 models")
    for family in families:
        trace, models = generate(family, seed=1)
        budget = sum(m.size_mb for m in models.values()) / 4
        seconds = []
        for policy in POLICIES.values():
            started = time.perf_counter()
            simulate(trace, models, budget, policy())
            seconds.append(f"{time.perf_counter() - started:.1f}")
        table.add_row(family, str(len(trace)), *seconds)
    Console().print(table)


if __name__ == "__main__":
    main(sys.argv[1:] or list(FAMILIES))
