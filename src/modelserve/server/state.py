"""What the protocols share: built once by ``server/app.py`` and passed to each of them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from modelserve.config import Settings
from modelserve.models.manager import ModelManager
from modelserve.observability.metrics import Metrics
from modelserve.protocol.shared_memory import SharedMemoryRegistry


@dataclass(eq=False)
class ServerState:
    """The running server: its settings, models, metrics, and whether startup loading has finished."""

    settings: Settings
    manager: ModelManager
    metrics: Metrics
    shared_memory: SharedMemoryRegistry = field(default_factory=SharedMemoryRegistry)
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False
    startup_error: str = ""
