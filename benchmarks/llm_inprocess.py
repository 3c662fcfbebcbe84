"""What benchmarks/llm.py measures in its own process: `transformers`' generate(), the ceiling the
servers are set against, and how far the CPU engine's int8 (and bfloat16) model strays from float32."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer

from benchmarks.llm_timing import Timing

PROMPT = "Hello, world! How are"
RAW = "raw generate()"
# The llm sections compared with float32. bfloat16 only rounds the weights: what it changes shows how
# far this model's greedy text moves for any rounding, a scale for int8's figures.
VARIANTS = {"int8": {"quantization": "int8"}, "bfloat16": {"dtype": "bfloat16"}}


class _Arrivals(BaseStreamer):
    """The time generate() hands over each new token; its first call is the prompt."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class RawGenerate:
    """generate() on the model in this process: a static batch of the prompt repeated, greedy, timed
    token by token through a streamer (called once a step for the whole batch, so every sequence of
    the batch gets the same times)."""

    def __init__(self, folder: Path) -> None:
        self.model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        self.ids = torch.tensor([AutoTokenizer.from_pretrained(folder)(PROMPT)["input_ids"]])

    def round(self, batch: int, tokens: int) -> list[Timing]:
        """One call at ``batch``, ``tokens`` tokens a sequence: a timing per sequence."""
        arrivals = _Arrivals()
        fixed = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}
        with torch.inference_mode():
            started = time.perf_counter()
            self.model.generate(self.ids.repeat(batch, 1), streamer=arrivals, **fixed)
        generated = arrivals.times[1:]
        return [Timing(generated[0] - started, generated, len(generated))] * batch


@dataclass(frozen=True)
class Agreement:
    """A variant of the model (int8, bfloat16) against float32 on the same prompts, greedy."""

    variant: str
    prompts: int
    tokens: int
    same_continuation: float  # share of prompts whose ``tokens`` greedy tokens are all the same
    common_prefix: float  # mean share of a continuation generated before the first different token
    top1: float  # on float32's continuations, share of positions where both pick the same next token
    logit_mae: float  # first step: mean |variant's logit - float32's|
    logit_scale: float  # first step: mean |float32 logit|, what logit_mae is set against


def agreement(folder: Path, prompts: list[str], tokens: int, variant: str) -> Agreement:
    """Greedy continuations and logits of the model the CPU engine builds for ``variant`` against the
    float32 model. The model is taken from the engine itself, so the quantization compared is the one
    served."""
    from modelserve.generative.engine import TransformersEngine
    from modelserve.repository.llm import LLMConfig

    engine = TransformersEngine(folder, LLMConfig.model_validate(VARIANTS[variant]))
    other, tokenizer = engine.model, engine.tokenizer
    reference: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    fixed = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}
    same = prefix = agreeing = 0.0
    errors, scales = [], []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([tokenizer(prompt)["input_ids"]])
            start = ids.shape[1]
            expected = reference.generate(ids, **fixed)
            produced = other.generate(ids, **fixed)
            differ = (expected[0, start:] != produced[0, start:]).nonzero()
            same += float(len(differ) == 0)
            prefix += (int(differ[0, 0]) if len(differ) else tokens) / tokens
            # Both models read float32's continuation, so each position is judged on the same context.
            wanted = reference(expected).logits[0, start - 1 : -1]
            got = other(expected).logits[0, start - 1 : -1].float()
            agreeing += float((wanted.argmax(-1) == got.argmax(-1)).float().mean())
            errors.append(float((wanted[0] - got[0]).abs().mean()))
            scales.append(float(wanted[0].abs().mean()))
    count = len(prompts)
    return Agreement(
        variant, count, tokens, same / count, prefix / count, agreeing / count, sum(errors) / count, sum(scales) / count
    )
