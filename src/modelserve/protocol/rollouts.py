"""The rollout API: start, read, pause, resume and abort a model's progressive rollout (rollout/).

Under ``/v2/repository/``, so authentication asks for the ``admin`` scope as for model control. The
start body is a pydantic model: a malformed one is a 400 naming the field, as every control route answers.
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from modelserve.protocol import openapi
from modelserve.protocol.http import json_response
from modelserve.rollout.analysis import Thresholds
from modelserve.rollout.controller import Rollouts
from modelserve.rollout.schema import Rollout

DEFAULT_STEPS = (1, 10, 50, 100)


class RolloutRequest(BaseModel):
    """A rollout to start: the new version, its steps, how often they are analysed and what they tolerate."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(ge=1, le=2**62, description="The version to roll out; it must be in the repository.")]
    steps: Annotated[
        list[int],
        Field(
            min_length=1,
            max_length=100,
            description="Percentages of the requests naming no version the new version takes, step by step, "
            "ascending, each from 1 to 100. Passing the last step below 100 promotes it.",
        ),
    ] = list(DEFAULT_STEPS)
    interval_s: Annotated[
        float, Field(ge=0.1, le=86_400, description="Seconds between analyses; each step lasts at least one.")
    ] = 60.0
    max_error_rate: Annotated[
        float,
        Field(ge=0, le=1, description="Largest fraction of the new version's requests that may fail in the model."),
    ] = 0.01
    max_latency_ratio: Annotated[
        float, Field(ge=1, le=1000, description="Largest ratio of the new version's p99 latency to the stable one's.")
    ] = 1.5
    min_samples: Annotated[
        int, Field(ge=1, le=10**9, description="Requests the new version must answer before a check is judged.")
    ] = 100
    latency_windows: Annotated[
        int,
        Field(ge=1, le=100, description="Windows in a row whose latency must breach before a rollback (errors: one)."),
    ] = 1

    @field_validator("steps")
    @classmethod
    def _ascending(cls, steps: list[int]) -> list[int]:
        if any(not 1 <= step <= 100 for step in steps):
            raise ValueError("each step is a percentage from 1 to 100")
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError("steps must be strictly ascending, such as [1, 10, 50, 100]")
        if steps[0] == 100:
            raise ValueError("a step below 100 is needed: 100 is the promotion, after the analysed steps")
        return steps


class RolloutDocument(BaseModel):
    """A model's newest rollout as the API answers it."""

    id: int
    model: str
    state: str = Field(description="progressing, paused, promoted, failed or aborted")
    stable_version: int
    new_version: int
    weight: int = Field(description="Percentage of the requests naming no version the new version takes now")
    steps: list[int]
    step: int = Field(description="Index into steps of the share given now")
    interval_s: float
    max_error_rate: float
    max_latency_ratio: float
    min_samples: int
    latency_windows: int
    reason: str = Field(description="Why it failed, was aborted, is paused or waits; empty otherwise")
    checks: list[dict[str, Any]] = Field(description="The latest analyses, newest last, with their figures")
    created_at: float
    updated_at: float
    finished_at: float | None


def document(rollout: Rollout) -> dict[str, Any]:
    """``rollout`` as the API answers it."""
    return {
        "id": rollout.id,
        "model": rollout.model,
        "state": rollout.state,
        "stable_version": rollout.stable_version,
        "new_version": rollout.new_version,
        "weight": rollout.weight,
        "steps": json.loads(rollout.steps),
        "step": rollout.step,
        "interval_s": rollout.interval_s,
        "max_error_rate": rollout.max_error_rate,
        "max_latency_ratio": rollout.max_latency_ratio,
        "min_samples": rollout.min_samples,
        "latency_windows": rollout.latency_windows,
        "reason": rollout.reason,
        "checks": json.loads(rollout.checks),
        "created_at": rollout.created_at,
        "updated_at": rollout.updated_at,
        "finished_at": rollout.finished_at,
    }


def router(rollouts: Rollouts) -> APIRouter:
    """The rollout routes of one server."""
    api = APIRouter(tags=["Progressive rollout"])
    database = {"model": openapi.Error, "description": "The rollouts' database could not be written; retry"}
    one = {**openapi.responses(RolloutDocument, 400, 404), 503: database}
    base = "/v2/repository/models/{model}/rollout"

    @api.get(
        "/v2/repository/rollouts",
        summary="Every model's newest rollout",
        responses=openapi.responses(list[RolloutDocument]),
    )
    async def every_rollout() -> Response:
        return json_response([document(r) for r in rollouts.all()])

    @api.post(
        base,
        summary="Start rolling out a version: a share of the requests naming none, step by step, analysed",
        responses={
            **openapi.responses(RolloutDocument, 400, 404, 507),
            503: {
                **database,
                "description": "The model serves no version yet, or the rollouts' database could not "
                "be written; the message says which",
            },
        },
    )
    async def start(model: str, body: RolloutRequest) -> Response:
        limits = Thresholds(body.max_error_rate, body.max_latency_ratio, body.min_samples, body.latency_windows)
        rollout = await rollouts.start(model, body.version, body.steps, body.interval_s, limits)
        return json_response(document(rollout))

    @api.get(base, summary="The model's newest rollout: its state, share and latest analyses", responses=one)
    async def status(model: str) -> Response:
        return json_response(document(await rollouts.status(model)))

    @api.post(f"{base}/pause", summary="Hold a progressing rollout at its share", responses=one)
    async def pause(model: str) -> Response:
        return json_response(document(await rollouts.pause(model)))

    @api.post(f"{base}/resume", summary="Go on with a paused rollout", responses=one)
    async def resume(model: str) -> Response:
        return json_response(document(await rollouts.resume_paused(model)))

    @api.post(f"{base}/abort", summary="Stop a rollout: every request back to the stable version", responses=one)
    async def abort(model: str) -> Response:
        return json_response(document(await rollouts.abort(model)))

    return api
