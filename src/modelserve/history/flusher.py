"""The traffic history's writer: a thread that moves the recorder's buckets to the database in batches.

Every HISTORY_FLUSH_INTERVAL_SEC it takes what the recorder holds and writes it in one transaction,
and once more when the server stops, so nothing accepted is lost on a clean shutdown. The database
may be down: the schema migration is retried each interval, a batch that fails goes back to the
recorder for the next write, and serving never waits for any of it. Memory does not grow with the
outage: beyond HISTORY_MAX_PENDING_BUCKETS waiting, the oldest buckets are dropped, counted and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from modelserve.history.recorder import Bucket, BucketKey, TrafficRecorder
from modelserve.history.schema import OUTCOMES

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelserve.history.query import TrafficHistory

log = logging.getLogger("modelserve.history")

PURGE_EVERY_S = 3600.0
# How long stopping waits for the last write: less than the pod's grace period, whatever the database does.
CLOSE_TIMEOUT_S = 15.0
# HISTORY_MAX_PENDING_BUCKETS' default: 100 models with traffic every minute for ten hours, about 26 MB.
MAX_PENDING_BUCKETS = 60_000


class Companion(Protocol):
    """Other rows written to the history's database on the flusher's schedule, after the traffic buckets
    (``regions.usage.UsageRecorder``: usage per model version)."""

    def flush(self, engine: Engine) -> None:
        """Write what waits; on failure keep it for the next flush and raise."""


class HistoryFlusher:
    """Owns the history's engine and the thread that writes to it."""

    def __init__(
        self,
        recorder: TrafficRecorder,
        url: str,
        interval_s: float,
        retention_s: float,
        *,
        max_pending_buckets: int = MAX_PENDING_BUCKETS,
        on_dropped: Callable[[int], None] | None = None,
        name: str = "history",
        companions: Sequence[Companion] = (),
        pool_size: int = 5,
        max_overflow: int = 10,
    ) -> None:
        self.recorder = recorder
        self.url = url
        self.interval_s = interval_s
        self.retention_s = retention_s  # 0: kept forever
        self.max_pending_buckets = max_pending_buckets
        self._on_dropped = on_dropped  # told how many buckets each failed write dropped
        self._companions = companions
        self._pool = {"pool_size": pool_size, "max_overflow": max_overflow}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._engine: Engine | None = None
        self._migrated = False
        self._failing = False
        self._next_purge = 0.0

    def start(self) -> None:
        """Start writing in the background."""
        self._thread.start()

    def close(self) -> None:
        """Write what is left and stop; blocks for at most ``CLOSE_TIMEOUT_S``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            log.error("traffic history: the last write did not finish in %g s; its buckets are lost", CLOSE_TIMEOUT_S)
            return
        if self._engine is not None:
            self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The engine on the history's database, opened on first use."""
        if self._engine is None:
            from modelserve.db import open_engine  # SQLAlchemy is imported by the writer, not at server import

            self._engine = open_engine(self.url, "history", **self._pool)
        return self._engine

    def reader(self) -> TrafficHistory:
        """Queries on the history, its schema brought up to date first; blocks, so call it in a thread."""
        from modelserve.history import store
        from modelserve.history.query import TrafficHistory

        store.migrate(self.engine)
        return TrafficHistory(self.engine)

    def flush(self) -> bool:
        """Migrate if not yet done, then write everything recorded so far; whether it all got written."""
        from modelserve.db import shown
        from modelserve.history import store

        buckets = self.recorder.take()
        try:
            if not self._migrated:
                store.migrate(self.engine)
                self._migrated = True
                log.info("traffic history in %s, buckets of %d s", shown(self.url), self.recorder.bucket_s)
            store.write(self.engine, buckets, self.recorder.bucket_s)
            buckets = {}  # written: a companion's failure below must not give them back
            for companion in self._companions:
                companion.flush(self.engine)
            if self.retention_s and time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + PURGE_EVERY_S
                deleted = store.purge(self.engine, int(time.time() - self.retention_s))
                if deleted:
                    log.info("traffic history: deleted %d bucket(s) older than the retention", deleted)
        except Exception as exc:  # a database error of any kind: keep the buckets, say so once per outage
            dropped = self.recorder.give_back(buckets, self.max_pending_buckets)
            if not self._failing:
                log.error("traffic history: cannot write to %s: %s; retrying", shown(self.url), _first_line(exc))
            self._failing = True
            if dropped:
                self._dropped(dropped)
            return False
        if self._failing:
            log.info("traffic history: writing to %s again", shown(self.url))
        self._failing = False
        return True

    def _dropped(self, dropped: dict[BucketKey, Bucket]) -> None:
        requests = sum(sum(bucket.counts[: len(OUTCOMES)]) for bucket in dropped.values())
        oldest, newest = min(key[2] for key in dropped), max(key[2] for key in dropped)
        log.warning(
            "traffic history: dropped %d bucket(s) (%d request(s), %s to %s UTC) waiting for the database, "
            "beyond HISTORY_MAX_PENDING_BUCKETS (%d)",
            len(dropped),
            requests,
            _utc(oldest),
            _utc(newest + self.recorder.bucket_s),
            self.max_pending_buckets,
        )
        if self._on_dropped is not None:
            self._on_dropped(len(dropped))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
        self.flush()


def _utc(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s))


def _first_line(error: Exception) -> str:
    # SQLAlchemy appends the statement and its parameters to its messages: keep them out of the log.
    return str(error).splitlines()[0] if str(error) else type(error).__name__
