"""The CPU engine against transformers' own generate(), and continuous batching at work. The engine is a
step machine: these tests drive its steps themselves, as the engine process does."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from modelserve.errors import InvalidInput, Overloaded
from modelserve.generative.engine import TransformersEngine
from modelserve.generative.params import SamplingParams
from modelserve.generative.scheduler import Output, Sequence
from modelserve.repository.llm import LLMConfig

PROMPTS = ["Hello, world! How are", "The model server", "Tokens are counted, latencies", "Paris"]


class Collector:
    """What one sequence was told, and when it ended."""

    def __init__(self) -> None:
        self.outputs: list[Output] = []
        self.done = threading.Event()

    def __call__(self, _: Sequence, output: Output) -> None:
        self.outputs.append(output)
        if output.finish_reason is not None:
            self.done.set()

    @property
    def text(self) -> str:
        return "".join(o.text for o in self.outputs)


@pytest.fixture
def engine(tiny_llama_folder: Path) -> Iterator[TransformersEngine]:
    running = TransformersEngine(tiny_llama_folder, LLMConfig(max_num_seqs=3, max_waiting=4))
    yield running
    running.close()


def finished(engine: TransformersEngine, collector: Collector) -> bool:
    """Run the engine's steps until it has nothing left; whether ``collector``'s sequence ended."""
    for _ in range(10_000):
        if engine.idle:
            break
        engine.step()
    return collector.done.is_set()


def reference(folder: Path, prompt: str, tokens: int) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = AutoTokenizer.from_pretrained(folder)(prompt)["input_ids"]
    out = model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False, eos_token_id=None)
    return [int(t) for t in out[0][len(ids) :]]


def test_greedy_equals_generate_token_for_token_while_batched(
    engine: TransformersEngine, tiny_llama_folder: Path
) -> None:
    """Sequences of different lengths prefilled together and decoded in one batch each produce
    generate()'s own tokens."""
    collectors = [Collector() for _ in PROMPTS]
    batches: list[int] = []
    forward = engine.forward

    def counted(ids: torch.Tensor, *rest: Any) -> Any:
        batches.append(ids.shape[0])
        return forward(ids, *rest)

    engine.forward = counted
    whole_model_calls: list[int] = []
    engine.model.register_forward_pre_hook(lambda *_: whole_model_calls.append(1))
    sequences = [
        engine.submit(f"r{i}", engine.encode(p), SamplingParams(temperature=0, max_tokens=12), c)
        for i, (p, c) in enumerate(zip(PROMPTS, collectors, strict=True))
    ]
    for collector in collectors:
        assert finished(engine, collector)
    assert batches[0] == 3  # max_num_seqs prompts in the first pass; the fourth waited for a place
    assert not whole_model_calls  # a Llama runs the written-out pass, not transformers' model(...)
    engine.eos_ids.clear()  # the random model may end early; the reference below never stops on eos
    for prompt, sequence, collector in zip(PROMPTS, sequences, collectors, strict=True):
        expected = reference(tiny_llama_folder, prompt, 12)
        assert sequence.output_ids == expected[: len(sequence.output_ids)]
        assert collector.outputs[-1].finish_reason in {"stop", "length"}
        assert sum(o.new_tokens for o in collector.outputs) == len(sequence.output_ids) + (
            collector.outputs[-1].finish_reason == "stop"
        )


def test_another_architecture_runs_through_transformers_own_forward(tiny_llama_folder: Path, tmp_path: Path) -> None:
    """A model the written-out pass does not read (GPT-2 here) runs as transformers defines it, batched and
    padded the same way, and still decodes generate()'s tokens."""
    folder = tmp_path / "gpt2"
    shutil.copytree(tiny_llama_folder, folder)  # the tokenizer; the model's files are replaced below
    vocabulary = AutoTokenizer.from_pretrained(folder).vocab_size
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocabulary, n_positions=512, n_embd=64, n_layer=2, n_head=4, eos_token_id=1)
    GPT2LMHeadModel(config).save_pretrained(folder)
    gpt2 = TransformersEngine(folder, LLMConfig(max_num_seqs=3))
    calls: list[int] = []
    gpt2.model.register_forward_pre_hook(lambda *_: calls.append(1))
    gpt2.eos_ids.clear()
    collectors = [Collector() for _ in PROMPTS]
    sequences = [
        gpt2.submit(f"g{i}", gpt2.encode(p), SamplingParams(temperature=0, max_tokens=8), c)
        for i, (p, c) in enumerate(zip(PROMPTS, collectors, strict=True))
    ]
    for collector in collectors:
        assert finished(gpt2, collector)
    assert calls
    for prompt, sequence in zip(PROMPTS, sequences, strict=True):
        assert sequence.output_ids == reference(folder, prompt, 8)


def test_streamed_text_is_the_full_decode_of_the_tokens(engine: TransformersEngine) -> None:
    """Text is detokenized a token at a time, yet what a caller is sent adds up to decoding all its
    tokens at once, bytes that never complete a character (replacement characters) included: a random
    model sampled hot produces plenty of those."""
    collectors = [Collector() for _ in range(6)]
    sequences = [
        engine.submit(f"r{i}", engine.encode(PROMPTS[i % 4]), SamplingParams(temperature=2.0, max_tokens=9, seed=i), c)
        for i, c in enumerate(collectors)
    ]
    for collector in collectors:
        assert finished(engine, collector)
    texts = [engine.tokenizer.decode(s.output_ids, skip_special_tokens=True) for s in sequences]
    assert [c.text for c in collectors] == texts
    assert any("\ufffd" in text for text in texts)  # the case held back by the incremental decoder


def test_a_prompt_prefilled_in_chunks_gives_generates_own_tokens(tiny_llama_folder: Path) -> None:
    """A prompt several times the step's token budget goes in over several steps, beside a running
    stream, and still decodes generate()'s tokens: each chunk continues the cache at its positions."""
    chunked = TransformersEngine(tiny_llama_folder, LLMConfig(max_num_batched_tokens=7))
    try:
        chunked.eos_ids.clear()
        prompt = " ".join(PROMPTS * 3)
        assert len(chunked.encode(prompt)) > 3 * 7
        collectors = [Collector(), Collector()]
        sequences = [
            chunked.submit(f"c{i}", chunked.encode(p), SamplingParams(temperature=0, max_tokens=10), c)
            for i, (p, c) in enumerate(zip(["Paris", prompt], collectors, strict=True))
        ]
        for collector in collectors:
            assert finished(chunked, collector)
    finally:
        chunked.close()
    for text, sequence in zip(["Paris", prompt], sequences, strict=True):
        assert sequence.output_ids == reference(tiny_llama_folder, text, 10)


def test_a_seed_repeats_a_sampled_generation(engine: TransformersEngine) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, max_tokens=10, seed=7)
    runs = [Collector(), Collector()]
    for collector in runs:
        engine.submit("s", engine.encode("Hello"), params, collector)
        assert finished(engine, collector)
    assert runs[0].text == runs[1].text


def test_stop_string_ends_the_text_before_it(engine: TransformersEngine) -> None:
    free = Collector()
    engine.submit("a", engine.encode("Paris"), SamplingParams(temperature=0, max_tokens=8), free)
    assert finished(engine, free)
    # The tiny model's weights come from a fixed seed, so its greedy answer is fixed too: long enough.
    assert len(free.text) >= 3, free.text
    stop = free.text[1:3]
    stopped = Collector()
    engine.submit("b", engine.encode("Paris"), SamplingParams(temperature=0, max_tokens=8, stop=(stop,)), stopped)
    assert finished(engine, stopped)
    assert stopped.text == free.text[: free.text.index(stop)]
    assert stopped.outputs[-1].finish_reason == "stop"


def test_prompt_too_long_and_full_queue_are_refused(tiny_llama_folder: Path) -> None:
    engine = TransformersEngine(tiny_llama_folder, LLMConfig(max_model_len=8, max_num_seqs=1, max_waiting=1))
    try:
        with pytest.raises(InvalidInput, match="max_model_len is 8"):
            engine.submit("x", list(range(8)), SamplingParams(), Collector())
        with pytest.raises(InvalidInput, match="ask for at most 4"):
            engine.submit("x", list(range(4)), SamplingParams(max_tokens=5), Collector())
        # No step runs meanwhile: one place in the batch, one in the queue, no third.
        engine.submit("y", [5, 6], SamplingParams(max_tokens=2), Collector())
        engine.submit("z", [5, 6], SamplingParams(max_tokens=2), Collector())
        with pytest.raises(Overloaded, match="at most 1"):
            engine.submit("w", [5, 6], SamplingParams(max_tokens=2), Collector())
    finally:
        engine.close()
    with pytest.raises(InvalidInput, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(InvalidInput, match="max_tokens"):
        SamplingParams(max_tokens=0)


def test_int8_quantization_shrinks_the_weights_and_still_generates(
    engine: TransformersEngine, tiny_llama_folder: Path
) -> None:
    quantized = TransformersEngine(tiny_llama_folder, LLMConfig(quantization="int8"))
    try:
        assert quantized.memory_bytes() < engine.memory_bytes() / 2
        collector = Collector()
        quantized.submit("q", quantized.encode("Paris"), SamplingParams(temperature=0, max_tokens=6), collector)
        assert finished(quantized, collector)
        assert collector.outputs[-1].finish_reason in {"stop", "length"}
    finally:
        quantized.close()


def test_quantization_the_engine_cannot_honour_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="set dtype: float32"):
        LLMConfig(quantization="int8", dtype="bfloat16")
    with pytest.raises(ValidationError, match="'int8' or 'fp8'"):
        LLMConfig.model_validate({"quantization": "int4"})
