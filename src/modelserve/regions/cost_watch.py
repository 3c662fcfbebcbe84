"""The server's view of cost: the usage database priced every COST_REFRESH_SEC, for /metrics to export.

Prometheus scrapes servers, so servers export the cost figures: each region and model's last 24 hours,
its anomaly score and the budgets' spending, from the database every server of a deployment writes
to. The query runs in a thread on an engine of its own (``pool="cost"``), never on the event loop and
never at scrape time: a scrape reads the last figures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from modelserve.regions.prices import PriceTable

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelserve.regions.cost import CostFigures

log = logging.getLogger("modelserve.cost")


class CostWatch:
    """Prices the usage database at ``table``'s prices when asked."""

    def __init__(self, url: str, table: PriceTable, *, pool_size: int = 5, max_overflow: int = 10) -> None:
        self.url = url
        self.table = table
        self._pool = {"pool_size": pool_size, "max_overflow": max_overflow}
        self._engine: Engine | None = None

    def figures(self) -> CostFigures:
        """The figures now; blocks on the database, so call it in a thread."""
        from modelserve.regions import cost

        return cost.figures(self._opened(), self.table)

    def close(self) -> None:
        """Close the engine's connections."""
        if self._engine is not None:
            self._engine.dispose()

    def _opened(self) -> Engine:
        if self._engine is None:
            from modelserve.db import open_engine
            from modelserve.history import store

            engine = open_engine(self.url, "cost", **self._pool)
            try:
                store.migrate(engine)  # the usage table may not exist before the history's first write
            except BaseException:
                engine.dispose()
                raise
            self._engine = engine
        return self._engine


async def watch_costs(watch: CostWatch, observe: Callable[[CostFigures], None], interval_s: float) -> None:
    """Hand ``observe`` fresh figures every ``interval_s``, until cancelled; a failure is logged once per
    streak and the last figures stay exported."""
    failing = False
    while True:
        try:
            figures = await asyncio.to_thread(watch.figures)
        except Exception as exc:  # a database that is down, usage the table cannot price: say which, retry
            if not failing:
                log.error("cost figures not refreshed: %s", str(exc).splitlines()[0] if str(exc) else type(exc))
            failing = True
        else:
            if failing:
                log.info("cost figures refreshed again")
            failing = False
            observe(figures)
        await asyncio.sleep(interval_s)
