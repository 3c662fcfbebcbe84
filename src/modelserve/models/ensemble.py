"""An ensemble's plan (platform ``ensemble``): its steps as a graph of tensors, checked when it loads.

Triton's ensemble scheduling as plain logic. Each step is a request to another model: its inputs are
tensors of the ensemble (the ensemble's own inputs, or earlier steps' outputs) and its outputs become
tensors of the ensemble, by the names ``input_map`` and ``output_map`` give them. ``ensemble_plan``
reads config.yaml's steps and refuses, naming the step and the tensor, a graph that could not run: a
step reading a tensor that nothing produces, a tensor written twice, steps waiting on each other, an
input no step reads, an output no step writes. Once the step models have loaded, ``EnsemblePlan.bind``
checks each step against its model's spec (tensor names, datatypes, shapes, batch sizes) and records
how each tensor is handed on. models/ensemble_run.py runs the result.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from modelserve.errors import ModelLoadError
from modelserve.repository.config import ModelConfig
from modelserve.types import TensorSpec

if TYPE_CHECKING:
    from modelserve.models.spec import ModelSpec

Array = np.ndarray[Any, Any]


class Reshape(StrEnum):
    """How a tensor crosses between a side with a batch dimension and one without, as Triton's does."""

    NONE = ""
    ADD_BATCH = "add_batch"  # to a batching model: [dims] becomes [1, dims] where it matches the model's dims
    DROP_BATCH = "drop_batch"  # from a batching model: [1, dims] becomes [dims] where the whole does not fit


@dataclass(frozen=True, slots=True)
class Feed:
    """One ensemble tensor handed to a consumer, a step model's input or an ensemble output, by its name."""

    name: str  # the consumer's name for it
    tensor: str  # the ensemble's name for it
    shape: tuple[int, ...] = ()  # the consumer's full shape (-1: any size), once bound
    reshape: Reshape = Reshape.NONE

    def take(self, tensors: Mapping[str, Array]) -> Array:
        """The tensor as the consumer takes it: the array itself, or a view with its batch axis added or
        dropped, never a copy."""
        array = tensors[self.tensor]
        if self.reshape is Reshape.ADD_BATCH and _fits(array.shape, self.shape[1:]):
            return array[np.newaxis]
        if self.reshape is Reshape.DROP_BATCH and array.shape[:1] == (1,) and not _fits(array.shape, self.shape):
            first: Array = array[0]
            return first
        return array


@dataclass(frozen=True, slots=True)
class Step:
    """One step: the model it calls, the tensors it reads (``feeds``) and those it writes."""

    number: int  # its place among config.yaml's steps, from 1: what messages name
    model: str
    version: int | None  # None: the version a request naming none gets (Triton's model_version -1)
    feeds: tuple[Feed, ...]  # input_map: each input of the model, from an ensemble tensor
    output_map: tuple[tuple[str, str], ...]  # each output of the model kept, and the ensemble tensor it becomes

    @property
    def writes(self) -> tuple[str, ...]:
        """The ensemble tensors this step produces."""
        return tuple(tensor for _, tensor in self.output_map)


@dataclass(frozen=True, slots=True)
class EnsemblePlan:
    """An ensemble's steps in an order in which each runs after those it reads from."""

    name: str
    inputs: tuple[str, ...]
    steps: tuple[Step, ...]
    outputs: tuple[Feed, ...]  # each ensemble output, from the tensor of its name
    read: frozenset[str]  # the tensors some step reads

    def where(self, step: Step) -> str:
        """The step as messages name it."""
        return f"ensemble '{self.name}' step {step.number} (model '{step.model}')"

    @property
    def models(self) -> frozenset[str]:
        """The models the steps call."""
        return frozenset(step.model for step in self.steps)

    def needed(self, outputs: Collection[str]) -> list[Step]:
        """The steps to run for ``outputs``, in running order. As in Triton, a step runs unless every tensor
        it writes is an output nobody asked for or read only by steps that do not run."""
        wanted = set(outputs)  # names the ensemble's spec has checked
        if len(wanted) == len(self.outputs):
            return list(self.steps)
        declared, running = {feed.name for feed in self.outputs}, []
        for step in reversed(self.steps):
            if any(t in wanted or (t not in declared and t not in self.read) for t in step.writes):
                running.append(step)
                wanted.update(feed.tensor for feed in step.feeds)
        return running[::-1]

    def bind(self, ensemble: ModelSpec, models: Mapping[int, ModelSpec]) -> EnsemblePlan:
        """The plan checked against the ensemble's spec and its step models' (``models``, by step number),
        each tensor's hand-over settled; ModelLoadError naming the step and the tensor where they disagree."""
        batched = ensemble.max_batch_size > 0
        # Every tensor's producer: what messages call it, its spec, and whether it has a batch dimension.
        made: dict[str, tuple[str, TensorSpec, bool]] = {
            t.name: (f"the ensemble's input {t.describe()}", t, batched) for t in ensemble.inputs
        }
        steps = []
        for step in self.steps:
            model, where = models[step.number], self.where(step)
            if batched and model.max_batch_size < ensemble.max_batch_size:
                raise ModelLoadError(
                    f"ensemble '{self.name}' takes batches of up to {ensemble.max_batch_size} (its max_batch_size), "
                    f"but its step {step.number} (model '{step.model}') takes up to {model.max_batch_size}; lower "
                    "the ensemble's max_batch_size or raise the model's"
                )
            takes, gives = {t.name: t for t in model.inputs}, {t.name: t for t in model.outputs}
            if unmapped := [t.describe() for t in model.inputs if t.name not in {f.name for f in step.feeds}]:
                raise ModelLoadError(f"{where}: input_map leaves out the model's input {', '.join(unmapped)}")
            feeds = []
            for feed in step.feeds:
                if feed.name not in takes:
                    raise ModelLoadError(
                        f"{where}: input_map names input '{feed.name}', which the model does not have; its inputs "
                        f"are {_listing(model.inputs)}"
                    )
                consumer = f"{where} input {takes[feed.name].describe()}"
                feeds.append(_hand_over(feed, takes[feed.name], model.max_batch_size > 0, made[feed.tensor], consumer))
            for output, tensor in step.output_map:
                if output not in gives:
                    raise ModelLoadError(
                        f"{where}: output_map names output '{output}', which the model does not have; its outputs "
                        f"are {_listing(model.outputs)}"
                    )
                made[tensor] = (f"{where} output {gives[output].describe()}", gives[output], model.max_batch_size > 0)
            steps.append(replace(step, feeds=tuple(feeds)))
        declared = {t.name: t for t in ensemble.outputs}
        outputs = tuple(
            _hand_over(
                feed,
                declared[feed.name],
                batched,
                made[feed.tensor],
                f"ensemble '{self.name}' output {declared[feed.name].describe()}",
            )
            for feed in self.outputs
        )
        return replace(self, steps=tuple(steps), outputs=outputs)


# What an ensemble's config.yaml may not set, and what to do instead.
_NOT_FOR_ENSEMBLES = {
    "instance_count": "Triton refuses instance_group on an ensemble; set it on the step models",
    "dynamic_batching": "an ensemble does not batch: each step model's own batcher does",
    "warmup": "warm up its step models instead",
    "llm": "it belongs to platform llm",
}


def ensemble_plan(name: str, config: ModelConfig) -> EnsemblePlan:
    """The plan of ensemble ``name`` from its config.yaml, or ModelLoadError saying what cannot run."""
    where = f"ensemble '{name}'"
    scheduling = config.ensemble_scheduling
    if scheduling is None:
        raise ModelLoadError(f"{where}: config.yaml has no ensemble_scheduling; list the ensemble's steps there")
    if given := [field for field in _NOT_FOR_ENSEMBLES if field in config.model_fields_set]:
        raise ModelLoadError(f"{where}: {given[0]} is not for an ensemble: {_NOT_FOR_ENSEMBLES[given[0]]}")
    if config.response_cache.enable:
        raise ModelLoadError(f"{where}: response_cache is not served for an ensemble; enable it on its step models")
    if not config.inputs or not config.outputs:
        raise ModelLoadError(
            f"{where}: declare its inputs and outputs in config.yaml (name, datatype, dims): the steps' tensors "
            "connect to them"
        )
    inputs = tuple(t.name for t in config.inputs)
    steps = [
        Step(
            number,
            entry.model_name,
            entry.model_version if entry.model_version > 0 else None,
            tuple(Feed(own, tensor) for own, tensor in entry.input_map.items()),
            tuple(entry.output_map.items()),
        )
        for number, entry in enumerate(scheduling.step, start=1)
    ]
    plan = EnsemblePlan(name, inputs, (), tuple(Feed(t.name, t.name) for t in config.outputs), frozenset())
    writer: dict[str, str] = {}  # tensor → the step output that writes it, as messages name it
    for step in steps:
        for output, tensor in step.output_map:
            here = f"step {step.number} (model '{step.model}') output '{output}'"
            if tensor in inputs:
                raise ModelLoadError(f"{where}: {here} is mapped to '{tensor}', an input of the ensemble")
            if tensor in writer:
                raise ModelLoadError(f"{where}: '{tensor}' is written by both {writer[tensor]} and {here}")
            writer[tensor] = here
    if missing := [t.name for t in config.outputs if t.name not in writer]:
        raise ModelLoadError(f"{where}: no step writes its output '{missing[0]}'; map a step's output to it")
    for step in steps:
        for feed in step.feeds:
            if feed.tensor not in inputs and feed.tensor not in writer:
                raise ModelLoadError(
                    f"{plan.where(step)}: input '{feed.name}' reads '{feed.tensor}', which is neither an input of "
                    "the ensemble nor any step's output"
                )
    read = frozenset(feed.tensor for step in steps for feed in step.feeds)
    if unread := [n for n in inputs if n not in read]:
        raise ModelLoadError(f"{where}: no step reads its input '{unread[0]}'; map it in a step's input_map")
    return replace(plan, steps=_in_running_order(plan, steps), read=read)


def calls_back(ensemble: str, models: Iterable[str], steps_of: Callable[[str], list[str]]) -> dict[str, str]:
    """The step models of ``ensemble`` through which it would call itself, ensemble after ensemble, each
    with the path; ``steps_of`` names the models a model's steps call (none for a model that is not an
    ensemble). Loading such a step model would wait on the ensemble's own load."""
    found: dict[str, str] = {}
    for model in models:
        if (path := _path_to(ensemble, [model], steps_of, set())) is not None:
            found[model] = f"it calls ensemble '{ensemble}' back ({' → '.join([ensemble, *path])})"
    return found


def _path_to(target: str, path: list[str], steps_of: Callable[[str], list[str]], seen: set[str]) -> list[str] | None:
    if path[-1] == target:
        return path
    if path[-1] in seen:
        return None
    seen.add(path[-1])
    for model in dict.fromkeys(steps_of(path[-1])):
        if (found := _path_to(target, [*path, model], steps_of, seen)) is not None:
            return found
    return None


def _in_running_order(plan: EnsemblePlan, steps: list[Step]) -> tuple[Step, ...]:
    """The steps, each after those whose outputs it reads (config.yaml's order among the rest)."""
    present, ordered, left = set(plan.inputs), [], steps
    while left:
        runnable = [step for step in left if all(feed.tensor in present for feed in step.feeds)]
        if not runnable:
            waiting = ", ".join(f"step {s.number} (model '{s.model}')" for s in left)
            raise ModelLoadError(
                f"ensemble '{plan.name}': {waiting} wait on each other's outputs, a cycle; a step may read the "
                "ensemble's inputs and the outputs of steps that do not read its own"
            )
        for step in runnable:
            ordered.append(step)
            present.update(step.writes)
        left = [step for step in left if step not in runnable]
    return tuple(ordered)


def _hand_over(
    feed: Feed, consumer: TensorSpec, batching: bool, producer: tuple[str, TensorSpec, bool], where: str
) -> Feed:
    """``feed`` bound to its consumer's spec, or ModelLoadError where the producer's tensor cannot be it.
    Between a side with a batch dimension and one without, the dimension is added or dropped (Triton's rule)."""
    source, made, batched = producer
    if made.datatype != consumer.datatype:
        raise ModelLoadError(f"{where} cannot take '{feed.tensor}' ({source}): the datatypes differ")
    if batched == batching:
        reshape, fits = Reshape.NONE, _agree(made.shape, consumer.shape)
    elif batching:
        reshape, fits = Reshape.ADD_BATCH, _agree(made.shape, consumer.shape[1:]) or _agree(made.shape, consumer.shape)
    else:
        reshape, fits = Reshape.DROP_BATCH, _agree(made.shape[1:], consumer.shape) or _agree(made.shape, consumer.shape)
    if not fits:
        raise ModelLoadError(f"{where} cannot take '{feed.tensor}' ({source}): the shapes differ (-1: any size)")
    return replace(feed, shape=consumer.shape, reshape=reshape)


def _agree(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def _fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return len(shape) == len(expected) and all(e in (-1, s) for s, e in zip(shape, expected, strict=True))


def _listing(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(spec.describe() for spec in specs) or "(none)"
