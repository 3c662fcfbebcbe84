"""Running an ensemble's request: each step a request to its model through the model manager, on the loop.

A step is an ordinary request (``call``: the manager's ``infer``), so its model's batcher joins it with
the model's other requests, and that model's statistics, limits and on-demand loading apply as to a
client's. A step starts once every tensor it reads exists; steps that do not wait on each other run at
once, each in a task of its own, while a chain's next step is awaited in the request's own task. Tensors
are handed on by reference: a step's inputs are the arrays the request or earlier steps produced (a view
where a batch axis is added or dropped), never copies. The first step to fail fails the request with
the step named and the failure's own kind, so a step's 400 stays a 400; steps still under way are
cancelled, and those still queued leave their queues unrun.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from modelserve.errors import DeadlineExceeded, ModelNotFound, ModelNotReady, ModelserveError
from modelserve.models.ensemble import Array, EnsemblePlan, Step
from modelserve.types import InferenceRequest, InferenceResponse


class StepCall(Protocol):
    """Where a step's request goes: the manager's ``infer``, with the time the request has left."""

    def __call__(
        self, request: InferenceRequest, deadline_s: float | None = None, gone: Callable[[], bool] | None = None
    ) -> Awaitable[InferenceResponse]: ...


@dataclass(frozen=True, slots=True)
class Deadline:
    """When the ensemble's answer is due (``time.monotonic()``), and which limit set it."""

    at: float
    limit_s: float
    reason: str

    def left(self, ensemble: str) -> float:
        """Seconds left for the next step, or DeadlineExceeded when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"ensemble '{ensemble}' did not answer within {self.limit_s:g} s ({self.reason})")
        return left


async def run_ensemble(
    plan: EnsemblePlan,
    request: InferenceRequest,
    wanted: list[str],
    call: StepCall,
    deadline: Deadline,
    gone: Callable[[], bool] | None = None,
) -> dict[str, Array]:
    """The outputs ``wanted`` of an ensemble's request, from the steps that lead to them."""
    tensors: dict[str, Array] = dict(request.inputs)
    waiting = plan.needed(wanted)
    running: dict[asyncio.Future[InferenceResponse], Step] = {}

    def start(step: Step) -> Awaitable[InferenceResponse]:
        return _step(plan, step, tensors, request, call, deadline, gone)

    try:
        while waiting or running:
            ready = [step for step in waiting if all(feed.tensor in tensors for feed in step.feeds)]
            waiting = [step for step in waiting if step not in ready]
            if len(ready) == 1 and not running:  # the next step of a chain: no task of its own
                _keep(ready[0], await start(ready[0]), tensors)
                continue
            running.update((asyncio.ensure_future(start(step)), step) for step in ready)
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                _keep(running.pop(task), task.result(), tensors)
    finally:
        for task in running:  # another step failed, or the caller's task was cancelled
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    feeds = {feed.name: feed for feed in plan.outputs}
    return {name: feeds[name].take(tensors) for name in wanted}


async def _step(
    plan: EnsemblePlan,
    step: Step,
    tensors: dict[str, Array],
    request: InferenceRequest,
    call: StepCall,
    deadline: Deadline,
    gone: Callable[[], bool] | None,
) -> InferenceResponse:
    inputs = {feed.name: feed.take(tensors) for feed in step.feeds}
    # As Triton's internal requests: the caller's id and priority, no timeout of their own but the time left.
    parameters = {"priority": request.parameters["priority"]} if "priority" in request.parameters else {}
    outputs = [output for output, _ in step.output_map]
    own = InferenceRequest(step.model, inputs, step.version, outputs, request.id, parameters)
    left = deadline.left(plan.name)
    try:
        return await call(own, left, gone)
    except ModelserveError as exc:
        raise in_step(plan.where(step), exc) from exc


def _keep(step: Step, response: InferenceResponse, tensors: dict[str, Array]) -> None:
    for output, tensor in step.output_map:
        tensors[tensor] = response.outputs[output]


def in_step(where: str, error: ModelserveError) -> ModelserveError:
    """A step's ``error`` as the ensemble's: the same kind (so the same status and code), naming the step.
    A step model that is not found makes the ensemble not ready (503): the ensemble itself exists."""
    message = f"{where}: {error.message}"
    if isinstance(error, ModelNotFound):
        return ModelNotReady(message)
    wrapped = type(error).__new__(type(error))  # its attributes kept (none take part in the message)
    wrapped.__dict__.update(vars(error))
    wrapped.args, wrapped.message = (message,), message
    return wrapped
