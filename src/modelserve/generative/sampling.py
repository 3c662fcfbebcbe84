"""Choosing the next token from a sequence's logits: greedy, or temperature, top-k and top-p sampling."""

from __future__ import annotations

import torch

from modelserve.generative.params import SamplingParams


def next_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """The next token id from one row of logits (float32, vocabulary-sized).

    Greedy takes the arg-max exactly as ``generate()`` does, so its output can be compared token for token.
    """
    if params.greedy:
        return int(torch.argmax(logits).item())
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
