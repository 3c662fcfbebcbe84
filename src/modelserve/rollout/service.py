"""The rollouts of a server, built from its settings by the composition root."""

from __future__ import annotations

from modelserve.config import ModelControlMode, Settings
from modelserve.db import open_engine
from modelserve.models.manager import ModelManager
from modelserve.rollout.controller import RolloutObserver, Rollouts
from modelserve.rollout.store import RolloutStore


def from_settings(settings: Settings, manager: ModelManager, observer: RolloutObserver) -> Rollouts:
    """The rollouts of a server with ``settings``, stored in its database (DATABASE_URL, else the traffic
    history's SQLite file), which is read at startup but not written until a rollout starts."""
    engine = open_engine(
        settings.history_database_url, "rollout", pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )
    control = settings.model_control_mode is not ModelControlMode.NONE
    return Rollouts(manager, RolloutStore(engine), observer, control_enabled=control, workers=settings.workers)
