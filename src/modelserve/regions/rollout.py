"""A version rolled out region by region: replicated first (verified, published last: part 1), then
the in-server progressive rollout (docs/ROLLOUT.md) on every server of one region at a time, in the
order given (by priority unless told). The next region starts only once every server of the one before
promoted the version; a rollback anywhere stops the walk, so the regions after it never serve the
version (their stores hold it, verified, for a later attempt).

Each server analyses its own traffic: a region's servers roll out side by side, and a failure on one
aborts the others of that region at once. The walk keeps nothing of its own: it reads each server's
rollout before acting, so a walk run again after an interruption follows the rollouts still
progressing and skips the servers that promoted the version already.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from modelserve.regions.config import Region

FINISHED = ("promoted", "failed", "aborted")
SKIPPED = "not started"  # a server of a region the walk never reached


class RolloutError(Exception):
    """A server refused or could not be asked; the message names it and says why."""


@dataclass
class ServerRollout:
    """One server's part of the walk: where its rollout of the version stands."""

    region: str
    endpoint: str
    state: str = SKIPPED
    weight: int = 0
    reason: str = ""
    started_at: float | None = None
    finished_at: float | None = None

    def update(self, document: dict[str, Any]) -> None:
        self.state = str(document["state"])
        self.weight = int(document["weight"])
        self.reason = str(document["reason"])
        self.started_at = float(document["created_at"])
        finished = document.get("finished_at")
        self.finished_at = float(finished) if finished is not None else None

    def as_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "endpoint": self.endpoint,
            "state": self.state,
            "weight": self.weight,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class ServerAPI:
    """The rollout API of one server (docs/API.md#progressive-rollout)."""

    def __init__(self, endpoint: str, token: str | None, timeout_s: float = 60.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s

    def current(self, model: str) -> dict[str, Any] | None:
        """The model's newest rollout on this server, or None when it never had one."""
        response = self._request("GET", self._path(model))
        if response.status_code == 404 and "has no rollout" in response.text:
            return None
        return self._answer(response)

    def start(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._answer(self._request("POST", self._path(model), body))

    def abort(self, model: str) -> None:
        self._answer(self._request("POST", self._path(model) + "/abort"))

    def serves(self, model: str, version: int) -> bool:
        """Whether ``version`` of ``model`` is loaded and ready here."""
        return self._request("GET", f"/v2/models/{model}/versions/{version}/ready").status_code == 200

    @staticmethod
    def _path(model: str) -> str:
        return f"/v2/repository/models/{model}/rollout"

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return httpx.request(method, self.endpoint + path, headers=self.headers, json=body, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise RolloutError(f"{self.endpoint}: cannot reach the server ({exc})") from None

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise RolloutError(f"{self.endpoint}: {response.status_code} {message}")
        answer: dict[str, Any] = response.json()
        return answer


def walk(
    regions: list[Region],
    model: str,
    body: dict[str, Any],
    *,
    token: str | None = None,
    on_change: Callable[[ServerRollout], None] = lambda server: None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> list[ServerRollout]:
    """Roll ``body["version"]`` of ``model`` out on each region's servers in turn; every server's
    outcome, those of regions not reached ``not started``. Raises RolloutError when a server cannot be
    asked, refuses, or (``timeout_s``) takes longer, after aborting what the walk started in that region."""
    for region in regions:
        if not region.endpoints:
            raise RolloutError(f"region {region.name} lists no serving endpoint in the regions file (endpoints:)")
    servers = [ServerRollout(r.name, e) for r in regions for e in r.endpoints]
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for region in regions:
        ours = [s for s in servers if s.region == region.name]
        apis = {s.endpoint: ServerAPI(s.endpoint, token) for s in ours}
        try:
            for server in ours:
                _start_or_follow(apis[server.endpoint], server, model, body)
                on_change(server)
            _follow(ours, apis, model, on_change, poll_s, deadline)
        except RolloutError:
            _abort_active(ours, apis, model, on_change)
            raise
        if any(s.state != "promoted" for s in ours):
            _abort_active(ours, apis, model, on_change)
            break
    return servers


def _start_or_follow(api: ServerAPI, server: ServerRollout, model: str, body: dict[str, Any]) -> None:
    current = api.current(model)
    if current is not None and current["new_version"] == body["version"] and current["state"] not in FINISHED[1:]:
        server.update(current)  # promoted already, or still progressing (paused): followed, not restarted
        return
    if (current is None or current["state"] in FINISHED) and api.serves(model, body["version"]):
        # No rollout runs and the version is loaded: it is the stable one (a rolled-back or aborted
        # version is unloaded), as after a restart following its promotion.
        server.state, server.weight, server.reason = "promoted", 100, "serves the version already"
        return
    server.update(api.start(model, body))


def _follow(
    servers: list[ServerRollout],
    apis: dict[str, ServerAPI],
    model: str,
    on_change: Callable[[ServerRollout], None],
    poll_s: float,
    deadline: float | None,
) -> None:
    """Until each server's rollout ended, or one failed."""
    while any(s.state not in FINISHED for s in servers):
        if any(s.state in FINISHED[1:] for s in servers):
            return
        if deadline is not None and time.monotonic() > deadline:
            waiting = ", ".join(f"{s.endpoint} ({s.state} at {s.weight} %)" for s in servers if s.state not in FINISHED)
            raise RolloutError(f"the rollout did not end in time on {waiting}")
        time.sleep(poll_s)
        for server in servers:
            if server.state in FINISHED:
                continue
            before = (server.state, server.weight)
            current = apis[server.endpoint].current(model)
            if current is None:
                raise RolloutError(f"{server.endpoint}: the rollout of {model} is gone (the server was replaced?)")
            server.update(current)
            if (server.state, server.weight) != before:
                on_change(server)


def _abort_active(
    servers: list[ServerRollout],
    apis: dict[str, ServerAPI],
    model: str,
    on_change: Callable[[ServerRollout], None],
) -> None:
    """Every request back to the stable version on the servers whose rollout still runs."""
    for server in servers:
        if server.started_at is None or server.state in FINISHED:
            continue
        try:
            apis[server.endpoint].abort(model)
            current = apis[server.endpoint].current(model)
        except RolloutError as exc:
            server.reason = f"could not be aborted: {exc}"
            continue
        if current is not None:
            server.update(current)
        on_change(server)
