"""Sampling parameters of one generation, checked before anything is queued (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelserve.errors import InvalidInput

MAX_STOP_STRINGS = 4  # OpenAI's limit


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How the next token is chosen and when a generation ends.

    ``temperature`` 0 is greedy decoding, which equals ``transformers``' own ``generate()`` token for token;
    ``max_tokens`` None means the rest of the model's context.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no limit
    max_tokens: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says (benchmarks)

    def __post_init__(self) -> None:
        if not 0 <= self.temperature <= 2:
            raise InvalidInput(f"temperature {self.temperature} must be between 0 and 2 (0 is greedy)")
        if not 0 < self.top_p <= 1:
            raise InvalidInput(f"top_p {self.top_p} must be above 0 and at most 1")
        if self.top_k < 0:
            raise InvalidInput(f"top_k {self.top_k} must be 0 (no limit) or positive")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidInput(f"max_tokens {self.max_tokens} must be at least 1")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidInput(f"stop holds {len(self.stop)} strings; at most {MAX_STOP_STRINGS} are allowed")
        if any(not s for s in self.stop):
            raise InvalidInput("stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        """Whether the most likely token is always taken."""
        return self.temperature == 0 or self.top_k == 1
