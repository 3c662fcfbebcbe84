"""Rollouts running in this server: started, analysed each interval, promoted or rolled back.

One ``Rollouts`` per server, built by the composition root. Each model's newest rollout is a state
machine stored in the database (``store``) before the server acts on it: the share of the requests
naming no version that its new version takes (``ModelManager.routes``), and the versions kept loaded
(``ModelManager.pins``). A progressing rollout has a task that wakes every interval, reads both
versions' windows (``window``) and judges them (``analysis``): a breach rolls back at once, a pass
moves to the next step, and passing the last promotes the new version.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from sqlalchemy.exc import SQLAlchemyError

from modelserve.errors import (
    DatabaseUnavailable,
    InvalidInput,
    ModelControlDisabled,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ModelserveError,
)
from modelserve.models.manager import ModelManager
from modelserve.models.records import ModelState, ModelVersion
from modelserve.rollout.analysis import Outcome, Split, Thresholds, Verdict, judge
from modelserve.rollout.schema import ACTIVE, Rollout, State
from modelserve.rollout.store import RolloutStore
from modelserve.rollout.window import Watch, not_serving

log = structlog.get_logger("modelserve.rollout")
stdlog = logging.getLogger("modelserve.rollout")

CHECKS_KEPT = 20  # analyses a rollout keeps for its status, newest last


class RolloutObserver(Protocol):
    """What a rollout reports as it goes (the server's metrics implement it)."""

    def observe_rollout(self, model: str, version: int, state: str, weight: int) -> None: ...

    def observe_rollout_check(self, model: str, outcome: str) -> None: ...

    def observe_rollback(self, model: str, reason: str) -> None: ...


class Rollouts:
    """The rollouts of one server's models."""

    def __init__(
        self,
        manager: ModelManager,
        store: RolloutStore,
        observer: RolloutObserver,
        *,
        control_enabled: bool,
        workers: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._manager = manager
        self._store = store
        self._observer = observer
        self._control_enabled = control_enabled
        self._workers = workers
        self._clock = clock
        self._current: dict[str, Rollout] = {}  # each model's newest rollout
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watches: dict[str, tuple[Watch, Watch]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- lifecycle -----------------------------------------------------------------------------------

    async def restore(self) -> None:
        """Read each model's newest rollout and pin its versions, before the models load at startup."""
        try:
            stored = await asyncio.to_thread(self._store.latest)
        except Exception as exc:  # serving goes on; what the table pins is lost until the next start
            stdlog.error("cannot read the rollouts from the database, none resumed: %s: %s", type(exc).__name__, exc)
            return
        for rollout in stored:
            self._current[rollout.model] = rollout
            self._apply(rollout)
            if rollout.state not in ACTIVE:  # the pin alone keeps the version it left from loading
                self._manager.routes.pop(rollout.model, None)
            else:
                log.info("rollout resumed", model=rollout.model, state=rollout.state, weight=rollout.weight)

    async def resume(self) -> None:
        """Once startup loading is done: load what progressing rollouts need, and analyse them again."""
        for rollout in [r for r in self._current.values() if r.state in ACTIVE]:
            try:
                await self._resume(rollout)
            except Exception:  # one rollout that cannot go on must not keep the server from serving
                stdlog.exception("cannot resume the rollout of %s", rollout.model)

    async def _resume(self, rollout: Rollout) -> None:
        model, new = rollout.model, rollout.new_version
        if not all(self._ready(model, v) for v in (rollout.stable_version, new)):
            try:
                await self._manager.refresh(model)
            except ModelserveError as exc:
                await self._roll_back(
                    rollout, State.FAILED, "load_failed", f"cannot load model '{model}': {exc.message}"
                )
                return
        if not self._ready(model, new):
            await self._roll_back(rollout, State.FAILED, "load_failed", f"version {new} did not load again at startup")
            return
        if self._workers > 1:  # each worker would analyse its own share of the traffic and write the same row
            stdlog.warning(
                "the rollout of %s is held at %d %%: it goes on only with --workers 1", model, rollout.weight
            )
            return
        if rollout.state == State.PROGRESSING and rollout.weight == 0:  # stopped while its version loaded
            await self._begin(rollout)
        elif rollout.state == State.PROGRESSING:
            self._run(rollout)

    async def close(self) -> None:
        """Stop the analyses; the stored state lets the next start resume them."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    # -- operator actions ----------------------------------------------------------------------------

    def get(self, model: str) -> Rollout:
        """The newest rollout of ``model``; ModelNotFound when it never had one."""
        if (rollout := self._current.get(model)) is None:
            raise ModelNotFound(
                f"model '{model}' has no rollout; start one with POST /v2/repository/models/{model}/rollout"
            )
        return rollout

    async def status(self, model: str) -> Rollout:
        """The newest rollout of ``model`` once any change under way is stored and in effect: a rollout
        read as promoted or failed already routes as it says."""
        async with self._lock(model):
            return self.get(model)

    def all(self) -> list[Rollout]:
        """The newest rollout of every model that had one."""
        return list(self._current.values())

    async def start(self, model: str, version: int, steps: list[int], interval_s: float, limits: Thresholds) -> Rollout:
        """Begin moving ``model``'s requests that name no version to ``version``, ``steps`` % at a time."""
        if not self._control_enabled:
            raise ModelControlDisabled(
                "rollouts load model versions at runtime, which is disabled; start the server with "
                "--model-control-mode explicit"
            )
        if self._workers > 1:
            raise InvalidInput(
                "a rollout runs in one process and this server has several (--workers); run the model's "
                "rollout on a server started with --workers 1"
            )
        async with self._lock(model):
            current = self._current.get(model)
            if current is not None and current.state in ACTIVE:
                raise InvalidInput(
                    f"model '{model}' has a {current.state} rollout to version {current.new_version}; "
                    f"abort it first (POST /v2/repository/models/{model}/rollout/abort)"
                )
            await self._manager.versions(model)  # ModelNotFound for a name the repository lacks
            stable = self._manager.ready_version(model)
            if stable is None or stable.version is None:
                raise ModelNotReady(f"model '{model}' serves no version to roll out from; load it first")
            if version == stable.version:
                raise InvalidInput(f"version {version} of model '{model}' is the one serving already")
            source = await asyncio.to_thread(self._manager.repository.source, model)
            if version not in source.files:
                held = ", ".join(str(v) for v in sorted(source.files))
                raise ModelNotFound.unknown(model, version, f"versions in the repository: {held}")
            rollout = Rollout.begin(model, stable.version, version, steps, interval_s, limits, self._clock())
            await self._save(rollout)
            self._current[model] = rollout
            self._apply(rollout)
            log.info("rollout started", model=model, stable=stable.version, version=version, steps=steps)
            try:
                await self._manager.refresh(model)
            except ModelLoadError as exc:
                await self._roll_back(
                    rollout, State.FAILED, "load_failed", f"version {version} failed to load: {exc.message}"
                )
                return rollout
            await self._begin(rollout)
            return rollout

    async def _begin(self, rollout: Rollout) -> None:
        """Its new version loaded, give it the first step's share and start the analysis."""
        rollout.weight, rollout.reason = json.loads(rollout.steps)[0], ""
        await self._save(rollout)
        self._apply(rollout)
        self._run(rollout)

    async def pause(self, model: str) -> Rollout:
        """Hold a progressing rollout at its share: no analysis, no step, until resumed."""
        async with self._lock(model):
            rollout = self._active(model, State.PROGRESSING, "pause")
            await self._move(rollout, State.PAUSED, "paused by an operator")
            self._stop(model)
            log.info("rollout paused", model=model, weight=rollout.weight)
            return rollout

    async def resume_paused(self, model: str) -> Rollout:
        """Go on with a paused rollout: a fresh window at the share it was paused at."""
        async with self._lock(model):
            rollout = self._active(model, State.PAUSED, "resume")
            await self._move(rollout, State.PROGRESSING, "")
            self._run(rollout)
            log.info("rollout resumed", model=model, weight=rollout.weight)
            return rollout

    async def abort(self, model: str) -> Rollout:
        """Stop a rollout and send every request back to the stable version."""
        async with self._lock(model):
            rollout = self.get(model)
            if rollout.state not in ACTIVE:
                raise InvalidInput(f"the rollout of model '{model}' is {rollout.state} already; nothing to abort")
            self._stop(model)
            await self._roll_back(rollout, State.ABORTED, "aborted", "aborted by an operator")
            return rollout

    # -- the analysis --------------------------------------------------------------------------------

    def _run(self, rollout: Rollout) -> None:
        model = rollout.model
        self._stop(model)
        watches = self._watches[model] = (Watch(), Watch())
        watches[0].restart(self._record(model, rollout.new_version))
        watches[1].restart(self._record(model, rollout.stable_version))
        # A context of its own: the analysis is no part of the request that started it (its trace id).
        analysis = self._analyse(rollout, watches)
        self._tasks[model] = asyncio.create_task(analysis, name=f"rollout:{model}", context=contextvars.Context())

    def _stop(self, model: str) -> None:
        if (task := self._tasks.pop(model, None)) is not None and task is not asyncio.current_task():
            task.cancel()
        for watch in self._watches.pop(model, ()):
            watch.stop()

    async def _analyse(self, rollout: Rollout, watches: tuple[Watch, Watch]) -> None:
        model = rollout.model
        new_watch, stable_watch = watches
        limits = Thresholds(
            rollout.max_error_rate, rollout.max_latency_ratio, rollout.min_samples, rollout.latency_windows
        )
        strikes = 0  # windows in a row whose p99 breached
        while True:
            await asyncio.sleep(rollout.interval_s)
            async with self._lock(model):
                if self._current.get(model) is not rollout or rollout.state != State.PROGRESSING:
                    return
                new, stable = self._record(model, rollout.new_version), self._record(model, rollout.stable_version)
                verdict = judge(new_watch.read(new), stable_watch.read(stable), rollout.baseline_p99_s, limits, strikes)
                if verdict.outcome is not Outcome.BREACH and (why := not_serving(new)) is not None:
                    verdict = Verdict(Outcome.BREACH, why, verdict.figures, "not_serving")
                self._observer.observe_rollout_check(model, verdict.outcome)
                self._note(rollout, verdict.outcome, verdict.reason, verdict.figures)
                if verdict.outcome is Outcome.WAIT:
                    rollout.reason = verdict.reason
                    continue
                if verdict.outcome is Outcome.BREACH:
                    self._stop(model)
                    await self._roll_back(rollout, State.FAILED, verdict.cause, verdict.reason)
                    return
                if verdict.outcome is Outcome.HOLD:
                    strikes, rollout.reason = strikes + 1, verdict.reason
                    new_watch.restart(new)
                    stable_watch.restart(stable)
                    continue
                strikes = 0
                if (stable_p99 := verdict.figures.get("stable_p99_ms")) is not None:
                    rollout.baseline_p99_s = stable_p99 / 1e3
                steps = json.loads(rollout.steps)
                # A last step of 100 is the promotion itself: no request would be left to the stable
                # version to compare with.
                promote = rollout.step + 1 >= len(steps) or steps[rollout.step + 1] == 100
                undo = rollout.step, rollout.weight, rollout.state, rollout.finished_at
                if promote:
                    rollout.state, rollout.weight, rollout.finished_at = State.PROMOTED, 100, self._clock()
                else:
                    rollout.step += 1
                    rollout.weight = steps[rollout.step]
                if not await self._stored(rollout):  # not acted on: the next interval tries again
                    rollout.step, rollout.weight, rollout.state, rollout.finished_at = undo
                    continue
                rollout.reason = ""
                self._apply(rollout)
                if promote:
                    self._stop(model)
                    log.info(
                        "rollout promoted", model=model, version=rollout.new_version, stable=rollout.stable_version
                    )
                    await self._settle(rollout)
                    return
                log.info("rollout step", model=model, version=rollout.new_version, weight=rollout.weight)
                new_watch.restart(self._record(model, rollout.new_version))
                stable_watch.restart(self._record(model, rollout.stable_version))

    async def _roll_back(self, rollout: Rollout, state: State, cause: str, reason: str) -> None:
        """Send every request back to the stable version (stored first), then unload the new one."""
        rollout.state, rollout.weight, rollout.reason = state, 0, reason
        rollout.finished_at = self._clock()
        # Unstored, the rollback happens all the same: serving the faulty version is worse than a restart
        # that resumes the rollout (and rolls it back again).
        await self._stored(rollout)
        self._apply(rollout)
        self._observer.observe_rollback(rollout.model, cause)
        log.warning(
            "rollout rolled back",
            model=rollout.model,
            version=rollout.new_version,
            stable=rollout.stable_version,
            state=state,
            cause=cause,
            reason=reason,
        )
        await self._settle(rollout)

    async def _settle(self, rollout: Rollout) -> None:
        """Retire the version a finished rollout no longer serves; its route goes once it has."""
        try:
            await self._manager.refresh(rollout.model)
        except Exception as exc:  # the route keeps requests off it; the next load retires it
            stdlog.warning("rollout of %s: cannot retire the version it left: %s", rollout.model, exc)
            return
        if self._current.get(rollout.model) is rollout:
            self._manager.routes.pop(rollout.model, None)

    # -- state ---------------------------------------------------------------------------------------

    def _apply(self, rollout: Rollout) -> None:
        """Route and pin what ``rollout``'s stored state says, and show it on /metrics."""
        model, stable, new = rollout.model, rollout.stable_version, rollout.new_version
        if rollout.state in ACTIVE:
            self._manager.pins[model] = frozenset({stable, new})
            self._manager.routes[model] = Split(stable, new, rollout.weight).choose
        else:
            kept = new if rollout.state == State.PROMOTED else stable
            self._manager.pins[model] = frozenset({kept})
            self._manager.routes[model] = lambda: kept  # until the version it left is retired
        self._observer.observe_rollout(model, new, rollout.state, rollout.weight)

    async def _save(self, rollout: Rollout) -> None:
        rollout.updated_at = self._clock()
        try:
            await asyncio.to_thread(self._store.save, rollout)
        except SQLAlchemyError as exc:
            stdlog.error(
                "cannot write the rollout of %s (%s): %s: %s", rollout.model, rollout.state, type(exc).__name__, exc
            )
            raise DatabaseUnavailable(
                f"the rollouts' database could not be written ({type(exc).__name__}); nothing was changed, "
                "retry when it answers (the server log has the details)"
            ) from None

    async def _move(self, rollout: Rollout, state: State, reason: str) -> None:
        """Store ``rollout`` in ``state``; unstored, it stays as it was (DatabaseUnavailable raised)."""
        before = rollout.state, rollout.reason
        rollout.state, rollout.reason = state, reason
        try:
            await self._save(rollout)
        except DatabaseUnavailable:
            rollout.state, rollout.reason = before
            raise

    async def _stored(self, rollout: Rollout) -> bool:
        """Save ``rollout``; False (``_save`` has logged why) when the database cannot be written."""
        try:
            await self._save(rollout)
        except DatabaseUnavailable:
            return False
        return True

    def _note(self, rollout: Rollout, outcome: str, reason: str, figures: dict[str, Any]) -> None:
        checks = json.loads(rollout.checks)
        checks.append(
            {"at": round(self._clock(), 3), "weight": rollout.weight, "outcome": outcome, "reason": reason, **figures}
        )
        rollout.checks = json.dumps(checks[-CHECKS_KEPT:])

    def _active(self, model: str, state: State, action: str) -> Rollout:
        rollout = self.get(model)
        if rollout.state != state:
            raise InvalidInput(f"the rollout of model '{model}' is {rollout.state}; only a {state} one can {action}")
        return rollout

    def _record(self, model: str, version: int) -> ModelVersion | None:
        return next((r for r in self._manager.records(model) if r.version == version), None)

    def _ready(self, model: str, version: int) -> bool:
        record = self._record(model, version)
        return record is not None and record.state is ModelState.READY

    def _lock(self, model: str) -> asyncio.Lock:
        return self._locks.setdefault(model, asyncio.Lock())
