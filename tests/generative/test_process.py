"""The CPU engine in its engine process, seen from the server: the same tokens and timings as in-process,
cancellation, a full queue refused before anything is sent, and an engine process that dies or cannot load."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelserve.errors import ModelLoadError, ModelNotReady, Overloaded
from modelserve.generative.params import SamplingParams
from modelserve.generative.process import EngineProcess
from modelserve.generative.stream import Generation
from modelserve.repository.llm import LLMConfig
from tests.generative.test_engine import PROMPTS, Collector, reference

LONG = SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(tiny_llama_folder: Path) -> Iterator[EngineProcess]:
    running = EngineProcess(tiny_llama_folder, LLMConfig(max_num_seqs=4, max_waiting=4))
    yield running
    running.close()


def until(check: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never happened within {timeout_s} s: {what}"
        time.sleep(0.01)


def test_greedy_tokens_text_and_timings_come_back_as_in_process(engine: EngineProcess, tiny_llama_folder: Path) -> None:
    collectors = [Collector() for _ in PROMPTS]
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    sequences = [
        engine.submit(f"r{i}", engine.encode(p), params, c)
        for i, (p, c) in enumerate(zip(PROMPTS, collectors, strict=True))
    ]
    for collector in collectors:
        assert collector.done.wait(30)
    for prompt, sequence, collector in zip(PROMPTS, sequences, collectors, strict=True):
        assert sequence.output_ids == reference(tiny_llama_folder, prompt, 10)
        assert collector.text == engine.tokenizer.decode(sequence.output_ids, skip_special_tokens=True)
        assert (sequence.finish_reason, collector.outputs[-1].finish_reason) == ("length", "length")
        assert sum(o.new_tokens for o in collector.outputs) == 10
        # The engine process's clock is this one's: its times fall between the submit and now.
        assert sequence.first_token is not None
        assert sequence.scheduled is not None
        assert sequence.arrived <= sequence.scheduled <= sequence.first_token <= time.perf_counter()
        assert len(sequence.gaps) == 9
        assert all(gap > 0 for gap in sequence.gaps)
    until(lambda: engine.counts()[:3] == (0, 0, 0), "the engine's counts back to nothing running")


def test_a_cancel_stops_the_generation_and_frees_it(engine: EngineProcess) -> None:
    collector = Collector()
    sequence = engine.submit("long", engine.encode("Paris"), LONG, collector)
    until(lambda: len(collector.outputs) >= 3, "a few tokens")
    assert engine.counts()[0] == 1
    engine.cancel(sequence)
    assert collector.done.wait(10)
    assert sequence.finish_reason == "abort"
    assert collector.outputs[-1].finish_reason == "abort"
    assert len(sequence.output_ids) < 400
    until(lambda: engine.counts()[0] == 0, "no sequence running")


async def test_on_an_event_loop_outputs_are_read_by_the_loop_itself(tiny_llama_folder: Path) -> None:
    """Submitted from a running loop, the engine process's messages are read on that loop (one wake a
    step), with no reader thread; its end comes through the loop too."""
    engine = await asyncio.to_thread(EngineProcess, tiny_llama_folder, LLMConfig())
    generation = Generation(engine, "loop", engine.encode("Paris"), SamplingParams(temperature=0, max_tokens=5))
    outputs = [output async for output in generation.outputs()]
    assert outputs[-1].finish_reason == "length"
    assert sum(o.new_tokens for o in outputs) == 5
    assert engine._loop is asyncio.get_running_loop()
    assert engine._reader is None
    waiting = Generation(engine, "cut", engine.encode("Paris"), LONG)
    os.kill(engine._process.pid, signal.SIGKILL)
    ended = [output async for output in waiting.outputs()]
    assert ended[-1].finish_reason == "error"
    await asyncio.to_thread(engine.close)


def test_interrupting_the_engine_process_does_not_stop_it(engine: EngineProcess) -> None:
    """Ctrl-C reaches every process of the terminal's group: the server decides when its engine stops."""
    os.kill(engine._process.pid, signal.SIGINT)
    collector = Collector()
    engine.submit("after", engine.encode("Paris"), SamplingParams(temperature=0, max_tokens=3), collector)
    assert collector.done.wait(10)
    assert collector.outputs[-1].finish_reason in {"stop", "length"}


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="scheduling policies are Linux's")
def test_the_engine_process_never_preempts_the_server_that_wakes_it(engine: EngineProcess) -> None:
    """A batch task: a submit must not hand the server's core to the engine before the server is done."""
    assert os.sched_getscheduler(engine._process.pid) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the server's own policy is left alone


def test_a_full_queue_is_refused_before_anything_is_sent(tiny_llama_folder: Path) -> None:
    engine = EngineProcess(tiny_llama_folder, LLMConfig(max_num_seqs=1, max_waiting=1))
    try:
        running, waiting = Collector(), Collector()
        engine.submit("a", engine.encode("Paris"), LONG, running)
        engine.submit("b", engine.encode("Paris"), LONG, waiting)
        with pytest.raises(Overloaded, match=r"at most 1\) and .* running \(max_num_seqs 1\)"):
            engine.submit("c", engine.encode("Paris"), LONG, Collector())
    finally:
        engine.close()
    assert running.outputs[-1].finish_reason == "abort"  # close ends what still runs, and says so
    assert waiting.outputs[-1].finish_reason == "abort"


def test_generations_cancelled_from_a_full_queue_make_room_at_once(tiny_llama_folder: Path) -> None:
    """Callers that hang up free their places before the engine confirms: the next caller is not refused."""
    engine = EngineProcess(tiny_llama_folder, LLMConfig(max_num_seqs=1, max_waiting=1))
    try:
        gone = [engine.submit(name, engine.encode("Paris"), LONG, Collector()) for name in ("a", "b")]
        for sequence in gone:
            engine.cancel(sequence)
        after = Collector()
        engine.submit("c", engine.encode("Paris"), SamplingParams(temperature=0, max_tokens=3), after)
        assert after.done.wait(10)
        assert after.outputs[-1].finish_reason == "length"
    finally:
        engine.close()


def test_an_engine_process_that_dies_ends_its_generations_with_an_error(tiny_llama_folder: Path) -> None:
    engine = EngineProcess(tiny_llama_folder, LLMConfig())
    try:
        collector = Collector()
        engine.submit("long", engine.encode("Paris"), LONG, collector)
        until(lambda: len(collector.outputs) >= 2, "a few tokens")
        os.kill(engine._process.pid, signal.SIGKILL)
        assert collector.done.wait(10)
        assert collector.outputs[-1].finish_reason == "error"
        with pytest.raises(ModelNotReady, match=r"engine process of this model exited \(code -9\): load the model"):
            engine.submit("next", engine.encode("Paris"), LONG, Collector())
        assert engine.counts()[:3] == (0, 0, 0)
    finally:
        engine.close()


def test_a_model_the_engine_process_cannot_load_is_a_load_error(tiny_llama_folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "1"
    shutil.copytree(tiny_llama_folder, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=str(broken)):
        EngineProcess(broken, LLMConfig())
