"""Choosing the next token from a sequence's logits: greedy, or temperature, top-k and top-p sampling."""

from __future__ import annotations

import torch

from modelserve.generative.params import SamplingParams


def next_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """Each row's next token id from a batch's logits [rows, vocabulary]: the greedy rows from one arg-max
    over the batch, exactly as ``generate()`` takes it (so their output can be compared token for token),
    the sampled rows one by one."""
    greedy = logits.argmax(dim=-1).tolist()
    return [
        greedy[row] if asked.greedy else _sampled(logits[row], asked, generator)
        for row, (asked, generator) in enumerate(zip(params, generators, strict=True))
    ]


def _sampled(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    scores = logits.float() / params.temperature
    if params.top_k > 0:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        # Keep the smallest set whose probability reaches top_p: a token goes when those before it reach it.
        drop = cumulative - torch.softmax(ordered, dim=-1) >= params.top_p
        scores = scores.scatter(0, order, ordered.masked_fill(drop, float("-inf")))
    probabilities = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator).item())
