"""The CPU engine: a causal LM from a Hugging Face folder, run by PyTorch with continuous batching.

The engine is a step machine, driven by the engine process (generative/process.py), which owns it on
one thread: no lock is taken here. Each step asks the scheduler what to run, prefills the prompt chunks
the step holds (the prompts that go in whole together, in one forward pass; a long prompt's chunk alone,
over the cache so far, over several steps), then decodes one token for every running sequence in a
single batched forward pass. Every sequence keeps its own key/value cache; for the batched pass the
caches are left-padded to the longest and masked, and split again after, so sequences of any length join
and leave between two steps. Text is detokenized incrementally (the ``tokenizers`` library's
DecodeStream, as vLLM does), so a step costs the same at the thousandth token as at the first; callers
are told of each new piece through a callback during the step.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers.decoders import DecodeStream
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from modelserve.errors import ModelLoadError
from modelserve.generative.forward import Layers, forward_of
from modelserve.generative.params import SamplingParams
from modelserve.generative.prompts import Prompts
from modelserve.generative.sampling import next_tokens
from modelserve.generative.scheduler import Listener, Output, Scheduler, Sequence
from modelserve.repository.llm import LLMConfig

log = logging.getLogger("modelserve.generative")


class TransformersEngine(Prompts):
    """A loaded model, its tokenizer and the thread that runs its steps."""

    def __init__(self, folder: Path, config: LLMConfig) -> None:
        self.config = config
        dtype = getattr(torch, config.dtype)
        quiet: Any = hf_logging.disable_progress_bar  # untyped in transformers
        quiet()  # a progress bar on stderr would break the JSON log lines
        try:
            # Typed Any: transformers' unions (a tokenizer's output, a cache's layers) are wider than these models.
            self.tokenizer: Any = AutoTokenizer.from_pretrained(folder)
            self.model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{folder}: not a loadable Hugging Face causal LM: {exc}") from exc
        if config.quantization == "int8":
            self.model = _int8(self.model)
        self.forward = forward_of(self.model)
        self._backend = self.tokenizer.backend_tokenizer  # the `tokenizers` one, for DecodeStream
        self.vocab_size = int(self.model.config.vocab_size)
        own_length = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_model_len = min(config.max_model_len or own_length, own_length)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self.scheduler = Scheduler(config.max_num_seqs, config.max_waiting, config.max_num_batched_tokens)
        self._batched: _Batched | None = None  # the last decode step's batch, reused while it holds
        self._listeners: dict[Sequence, Listener] = {}

    def submit(self, request_id: str, prompt_ids: list[int], params: SamplingParams, listener: Listener) -> Sequence:
        """Queue a generation; refuse it now if it cannot fit the context or the waiting queue is full."""
        sequence = Sequence(request_id, list(prompt_ids), params, self.room(prompt_ids, params))
        sequence.decoder = DecodeStream(skip_special_tokens=True)
        if params.seed is not None:
            sequence.generator = torch.Generator().manual_seed(params.seed)
        self.scheduler.add(sequence)
        self._listeners[sequence] = listener
        return sequence

    def cancel(self, sequence: Sequence) -> None:
        """Stop a sequence at the next step and free its cache; a finished one is left as it is."""
        sequence.cancelled = True

    def counts(self) -> tuple[int, int, int, int]:
        """Sequences running and waiting now; tokens held in their caches, and the most the running batch
        may hold (``max_num_seqs`` times ``max_model_len``): their ratio is vLLM's KV-cache usage."""
        running = self.scheduler.running
        held = sum(s.prefilled + len(s.output_ids) for s in running if s.cache is not None)
        capacity = self.config.max_num_seqs * self.max_model_len
        return len(running), len(self.scheduler.waiting), held, capacity

    def memory_bytes(self) -> int:
        """The weights' size (int8 ones included, which are not parameters); the caches grow with the
        running sequences and are not reserved."""
        return sum(_tensor_bytes(value) for value in self.model.state_dict().values())

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing runs: a step would do nothing."""
        return self.scheduler.idle

    def close(self) -> None:
        """End every sequence still waiting or running with finish reason ``abort``."""
        for sequence in [*self.scheduler.running, *self.scheduler.waiting]:
            self._end(sequence, "abort")

    @torch.inference_mode()
    def step(self) -> None:
        """One step: drop the cancelled sequences, prefill what the scheduler admits, decode one token for
        every running sequence; each listener is told of its sequence's new text before it returns."""
        step, dropped = self.scheduler.schedule()
        for sequence in dropped:
            self._end(sequence, "abort")
        try:
            whole = [s for s, count in step.prefill if count == len(s.prompt_ids)]
            if len(whole) > 1:
                self._prefill_together(whole)
            for sequence, count in step.prefill:
                if len(whole) < 2 or count < len(sequence.prompt_ids):
                    self._prefill(sequence, count)
            if step.decode:
                self._decode(step.decode)
        except Exception:  # a bug or an allocation failure: every sequence of the step ends
            log.exception("generation step failed")
            self._batched = None
            for sequence in [*(s for s, _ in step.prefill), *step.decode]:
                if sequence.finish_reason is None:
                    self._end(sequence, "abort", failed=True)

    def _prefill(self, sequence: Sequence, count: int) -> None:
        """The next ``count`` prompt tokens into the sequence's cache; the first token once all are in."""
        start = sequence.prefilled
        ids = torch.tensor([sequence.prompt_ids[start : start + count]])
        positions = torch.arange(start, start + count).unsqueeze(0)
        logits, sequence.cache = self.forward(ids, positions, None, sequence.cache if start else None)
        sequence.prefilled = start + count
        if sequence.prefilled == len(sequence.prompt_ids):
            self._accept(sequence, self._choose([sequence], logits)[0])

    def _prefill_together(self, sequences: list[Sequence]) -> None:
        """Whole prompts in one forward pass, left-padded to the longest and masked, as a decode step
        runs its batch; each sequence keeps its rows of the cache (views, no copy) and its first token.
        Many requests arriving at once (a burst) cost one pass, not one each."""
        lengths = [len(s.prompt_ids) for s in sequences]
        longest = max(lengths)
        ids = torch.zeros(len(sequences), longest, dtype=torch.long)
        mask = torch.zeros(len(sequences), longest, dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, longest - lengths[row] :] = torch.tensor(sequence.prompt_ids)
            mask[row, longest - lengths[row] :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, layers = self.forward(ids, positions, mask, None)
        for row, sequence in enumerate(sequences):
            start = longest - lengths[row]
            sequence.cache = [(k[row : row + 1, :, start:], v[row : row + 1, :, start:]) for k, v in layers]
            sequence.prefilled = lengths[row]
        for sequence, token in zip(sequences, self._choose(sequences, logits), strict=True):
            self._accept(sequence, token)

    def _decode(self, batch: list[Sequence]) -> None:
        """One token for each sequence of ``batch`` in one forward pass. The batched cache of the last
        step is kept: while the same sequences decode step after step (most steps), it is used as it is,
        and each sequence's own cache is cut from it only when the batch changes."""
        batch = [s for s in batch if s.finish_reason is None]
        kept, self._batched = self._batched, None
        if not batch:
            if kept is not None:
                _unbatch(kept)
            return
        if kept is not None and kept.sequences == batch:
            cache, positions = kept.cache, kept.positions + 1
            mask = torch.cat([kept.mask, torch.ones(len(batch), 1, dtype=torch.long)], dim=1)
        else:
            if kept is not None:
                _unbatch(kept)
            cache, mask, positions = _batch(batch)
        ids = torch.tensor([[s.output_ids[-1]] for s in batch])
        logits, cache = self.forward(ids, positions, mask, cache)
        self._batched = _Batched(batch, cache, mask, positions)
        for sequence, token in zip(batch, self._choose(batch, logits), strict=True):
            sequence.cache = IN_BATCH
            self._accept(sequence, token)

    @staticmethod
    def _choose(sequences: list[Sequence], logits: torch.Tensor) -> list[int]:
        return next_tokens(logits, [s.params for s in sequences], [s.generator for s in sequences])

    def _accept(self, sequence: Sequence, token: int) -> None:
        """Take the next token, hand the caller its new text, and end the sequence where it ends."""
        now = time.perf_counter()
        if sequence.last_token is not None:
            sequence.gaps.append(now - sequence.last_token)
        sequence.first_token = sequence.first_token or now
        sequence.last_token = now
        if token in self.eos_ids and not sequence.params.ignore_eos:  # counted as a generated token, as vLLM counts it
            self._end(sequence, "stop", new_tokens=1)
            return
        sequence.output_ids.append(token)
        # None while the token ends inside a UTF-8 character: its text comes with the next.
        if (piece := sequence.decoder.step(self._backend, token)) is not None:
            sequence.text += piece
            sequence.decoded = len(sequence.output_ids)
        text = sequence.text
        for stop in sequence.params.stop:
            if (at := text.find(stop)) >= 0:
                self._end(sequence, "stop", text=text[:at], new_tokens=1)
                return
        if len(sequence.output_ids) >= sequence.max_tokens:
            self._end(sequence, "length", new_tokens=1)
            return
        # Hold back what may be the start of a stop string.
        ready = len(text) - max((len(s) - 1 for s in sequence.params.stop), default=0)
        piece = text[sequence.text_sent : ready] if ready > sequence.text_sent else ""
        sequence.text_sent += len(piece)
        if (listener := self._listeners.get(sequence)) is not None:
            listener(sequence, Output(piece, 1))

    def _end(
        self, sequence: Sequence, reason: str, *, text: str | None = None, new_tokens: int = 0, failed: bool = False
    ) -> None:
        if text is None:
            text = self._flushed(sequence)
        rest = text[sequence.text_sent :]
        sequence.text_sent = max(sequence.text_sent, len(text))
        self.scheduler.finish(sequence, reason)
        if (listener := self._listeners.pop(sequence, None)) is not None:
            listener(sequence, Output(rest, new_tokens, "error" if failed else reason))

    def _flushed(self, sequence: Sequence) -> str:
        """The whole output's text, its last tokens included where they end inside a character (as
        replacement characters, as a full decode gives them): DecodeStream holds those back for good.
        They are decoded after a few tokens already out, as DecodeStream does, since some decoders
        treat the first token of a text apart (a leading space)."""
        if sequence.decoded == len(sequence.output_ids):
            return sequence.text
        start = max(0, sequence.decoded - 4)
        before: str = self.tokenizer.decode(sequence.output_ids[start : sequence.decoded], skip_special_tokens=True)
        after: str = self.tokenizer.decode(sequence.output_ids[start:], skip_special_tokens=True)
        return sequence.text + after[len(before) :]


def _int8(model: Any) -> Any:
    """The model with its linear layers quantized to int8 weights, activations quantized per call."""
    with warnings.catch_warnings():
        # torch.ao.quantization warns of its own deprecation on every call; it is what torch 2.13 has on
        # the CPU without torchao, and a warning here would fail a load (warnings are errors in the tests).
        warnings.simplefilter("ignore")
        quantize: Any = torch.ao.quantization.quantize_dynamic  # untyped in torch
        return quantize(model, {torch.nn.Linear}, dtype=torch.qint8)


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, tuple | list):  # a quantized layer's packed weight and bias
        return sum(_tensor_bytes(item) for item in value)
    return 0


# What a sequence's ``cache`` holds while its keys and values live in the engine's batched cache.
IN_BATCH: Layers = []


@dataclass(slots=True)
class _Batched:
    """The last decode step's batch: its sequences, their cache left-padded to one length, the mask of
    the padding and each row's position of the next token."""

    sequences: list[Sequence]
    cache: Layers
    mask: torch.Tensor
    positions: torch.Tensor


def _batch(batch: list[Sequence]) -> tuple[Layers, torch.Tensor, torch.Tensor]:
    """The sequences' own caches as one, left-padded to the longest and masked; each row's next position."""
    lengths = [s.cache[0][0].shape[-2] for s in batch]
    longest = max(lengths)
    layers: Layers = []
    for index in range(len(batch[0].cache)):
        keys = [_left_pad(s.cache[index][0], longest) for s in batch]
        values = [_left_pad(s.cache[index][1], longest) for s in batch]
        layers.append((torch.cat(keys), torch.cat(values)))
    mask = torch.zeros(len(batch), longest + 1, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, longest - length :] = 1
    return layers, mask, torch.tensor([[length] for length in lengths])


def _unbatch(batched: _Batched) -> None:
    """Give each sequence of a batched cache still running its own cache again (views, no copy)."""
    grown = batched.cache
    for row, sequence in enumerate(batched.sequences):
        if sequence.finish_reason is None:
            start = int((batched.mask[row] == 0).sum())
            sequence.cache = [(k[row : row + 1, :, start:], v[row : row + 1, :, start:]) for k, v in grown]


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - tensor.shape[-2]
    if missing == 0:
        return tensor
    return torch.nn.functional.pad(tensor, (0, 0, missing, 0))
