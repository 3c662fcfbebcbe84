"""Traffic history: every inference request counted in per-model time buckets, kept in a database.

``recorder`` is the hot path (in memory, no I/O), ``flusher`` the thread that writes batches,
``store`` the writes and migrations, ``query`` what pre-warming policies read, ``schema`` the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from modelserve.config import Settings
from modelserve.history.flusher import Companion, HistoryFlusher
from modelserve.history.recorder import TrafficRecorder

__all__ = ["HistoryFlusher", "TrafficRecorder", "from_settings"]

DAY_S = 86_400


def from_settings(
    settings: Settings, on_dropped: Callable[[int], None] | None = None, companions: Sequence[Companion] = ()
) -> HistoryFlusher | None:
    """The history a server with ``settings`` keeps; None when TRAFFIC_HISTORY is off. ``on_dropped``
    counts the buckets dropped while the database is down (``Metrics.observe_history_dropped``);
    ``companions`` write their own rows at each flush (usage per model version)."""
    if not settings.traffic_history:
        return None
    return HistoryFlusher(
        TrafficRecorder(settings.history_bucket_sec),
        settings.history_database_url,
        settings.history_flush_interval_sec,
        settings.history_retention_days * DAY_S,
        max_pending_buckets=settings.history_max_pending_buckets,
        on_dropped=on_dropped,
        companions=companions,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
