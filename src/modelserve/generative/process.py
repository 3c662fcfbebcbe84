"""The CPU engine in a process of its own, behind the same calls (submit, cancel, counts) as in-process.

A small model's forward pass is mostly Python: run on the server's interpreter, every decoding step holds
the GIL the event loop needs to write the streams, and each waits for the other (at 32 streams the server
wrote half the tokens its engine made alone). vLLM runs its engine core in a process of its own for the
same reason; so does this. The server keeps the tokenizer (prompts are encoded and checked before they
are sent, so a bad one is still a 400 at once) and a mirror ``Sequence`` per generation; the engine
process runs ``TransformersEngine`` and sends, after each step, one message with every sequence's new
text and timings, and its counts for the metrics; the server reads it on its event loop, which the
outputs wake once a step.

Engine processes fork from a forkserver that has imported torch and transformers once, so loading a
generative model again (after an eviction, a pre-warm) does not pay for the imports again. The engine
process ignores SIGINT and SIGTERM: the server decides when it stops (``close``, after a drain), and it
exits by itself when the server is gone. Should it die, every generation it held ends with an error and
the model answers no more until it is loaded again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from modelserve.errors import ModelLoadError, ModelNotReady, ModelserveError
from modelserve.generative.params import SamplingParams
from modelserve.generative.prompts import Prompts
from modelserve.generative.scheduler import Listener, Output, Sequence, SequenceState, check_room
from modelserve.observability.logging import configure_logging, configured
from modelserve.repository.llm import LLMConfig

log = logging.getLogger("modelserve.generative")

# What the forkserver imports once, before the first engine process forks from it.
_PRELOAD = ["torch", "transformers", "modelserve.generative.engine"]
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(_PRELOAD)

# One output of a step, as sent (plain values: they pickle faster than dataclasses): the sequence's key,
# its output's text, tokens and finish reason, the sequence's own finish reason, the token ids it added, and
# its timings (perf_counter is the system's monotonic clock on Linux, the same in both processes).
_Sent = tuple[int, str, int, str | None, str | None, list[int], float | None, float | None, float | None]


class EngineProcess(Prompts):
    """A generative model's engine process, seen from the server."""

    def __init__(self, folder: Path, config: LLMConfig) -> None:
        self.config = config
        # Typed Any: transformers' unions are wider than this tokenizer.
        self.tokenizer: Any = AutoTokenizer.from_pretrained(folder)
        self._connection, theirs = _context.Pipe()
        self._process = _context.Process(
            target=_serve, args=(folder, config, theirs, configured()), name="generation", daemon=True
        )
        self._process.start()
        theirs.close()
        try:
            ready = self._connection.recv()
        except EOFError:
            self._process.join(10)
            raise ModelLoadError(
                f"{folder}: the engine process exited (code {self._process.exitcode}) while loading the model; "
                "the server log has its output"
            ) from None
        if ready[0] == "failed":
            self._process.join(10)
            raise ModelLoadError(ready[1])
        _, self.vocab_size, self.max_model_len, self._weights = ready
        self._lock = threading.Lock()  # the mirrors, the counts and the pipe's sending end
        self._keys = itertools.count()
        self._mirrors: dict[int, tuple[Sequence, Listener]] = {}
        self._key_of: dict[Sequence, int] = {}
        self._counts = (0, 0, 0, config.max_num_seqs * self.max_model_len)
        self._gone: str | None = None  # why the engine process answers no more
        # Where the engine process's messages are read: the event loop of the first submit where it came
        # from one, else a thread (the V2 infer call submits from an inference thread). Chosen then, since
        # before a submit the engine process sends nothing.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None

    def submit(self, request_id: str, prompt_ids: list[int], params: SamplingParams, listener: Listener) -> Sequence:
        """Send a generation to the engine process; refuse it now if it cannot fit the context or the
        waiting queue is full (counted here: the engine process may only have fewer). Cancelled sequences
        count for nothing, as in the engine's own queue: the engine drops them before its next step, and
        until it says so their callers, gone, would keep the next ones out."""
        sequence = Sequence(request_id, list(prompt_ids), params, self.room(prompt_ids, params))
        with self._lock:
            if self._gone is not None:
                raise ModelNotReady(self._gone)
            live = sum(not mirror.cancelled for mirror, _ in self._mirrors.values())
            running = min(self._counts[0], live)
            check_room(live - running, running, self.config.max_num_seqs, self.config.max_waiting)
            key = next(self._keys)
            self._mirrors[key] = (sequence, listener)
            self._key_of[sequence] = key
            if self._loop is None and self._reader is None:
                self._start_reading()
            self._connection.send(("submit", key, request_id, sequence.prompt_ids, params))
        return sequence

    def _start_reading(self) -> None:
        """Read on the caller's event loop where it has one: a step's outputs then wake the loop once,
        where a reader thread would wake itself and then the loop, for every token."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._reader = threading.Thread(target=self._read, name="generation-reader", daemon=True)
            self._reader.start()
        else:
            self._loop.add_reader(self._connection.fileno(), self._readable)

    def cancel(self, sequence: Sequence) -> None:
        """Stop a sequence at the engine's next step and free its cache; a finished one is left as it is."""
        with self._lock:
            sequence.cancelled = True
            key = self._key_of.get(sequence)
            if key is not None and self._gone is None:
                self._connection.send(("cancel", key))

    def counts(self) -> tuple[int, int, int, int]:
        """Sequences running and waiting, tokens held in their caches and the most they may hold, as of
        the engine's last step."""
        return self._counts

    def memory_bytes(self) -> int:
        """The weights' size, as the engine process measured them."""
        return int(self._weights)

    def close(self) -> None:
        """Stop the engine process; sequences still running end with finish reason ``abort``."""
        with self._lock:
            if self._gone is None:
                self._gone = "this model's engine was stopped (the model was unloaded): load it again"
                self._connection.send(("close",))
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)
        if self._reader is not None:
            self._reader.join(10)
        elif self._loop is None:  # never asked for anything: no reader to see the end
            self._connection.close()
        # Read on the loop, the last outputs and the end come through it, which then closes the pipe.

    def _read(self) -> None:
        """A reader thread's work: each step's outputs to their listeners, until the engine process is gone."""
        while True:
            try:
                self._receive(self._connection.recv())
            except (EOFError, OSError):
                break
        self._ended()

    def _readable(self) -> None:
        """On the loop: the next message in the pipe, or the end when the engine process is gone. One a
        wake, not all that are there: an engine faster than the loop would keep it here, its timers
        (a generation's REQUEST_TIMEOUT_SEC) and its other requests waiting."""
        try:
            self._receive(self._connection.recv())
        except (EOFError, OSError):
            if self._loop is not None:
                self._loop.remove_reader(self._connection.fileno())
            self._ended()

    def _receive(self, message: tuple[str, list[_Sent], tuple[int, int, int, int]]) -> None:
        _, outputs, counts = message
        with self._lock:
            self._counts = counts
        for sent in outputs:
            self._tell(*sent)

    def _ended(self) -> None:
        """The engine process is gone: every generation it still held ends with an error."""
        self._process.join(10)  # its exit code, once it is reaped (at once: its end closed the pipe)
        with self._lock:
            self._gone = self._gone or (
                f"the engine process of this model exited (code {self._process.exitcode}): load the model again"
            )
            self._connection.close()  # nothing is sent once it is gone
            left, self._mirrors, self._key_of = list(self._mirrors.values()), {}, {}
            self._counts = (0, 0, 0, self._counts[3])
        if left:
            log.error("%s; %d generations ended with an error", self._gone, len(left))
        for sequence, listener in left:
            sequence.state, sequence.finish_reason = SequenceState.FINISHED, "abort"
            listener(sequence, Output("", 0, "error"))

    def _tell(
        self,
        key: int,
        text: str,
        new_tokens: int,
        finish_reason: str | None,
        reason: str | None,
        new_ids: list[int],
        scheduled: float | None,
        first: float | None,
        last: float | None,
    ) -> None:
        with self._lock:
            mirror = self._mirrors.get(key)
            if mirror is not None and finish_reason is not None:
                del self._mirrors[key], self._key_of[mirror[0]]
        if mirror is None:
            return
        sequence, listener = mirror
        sequence.output_ids.extend(new_ids)
        if scheduled is not None and sequence.scheduled is None:
            sequence.scheduled, sequence.state = scheduled, SequenceState.RUNNING
        if last is not None and sequence.last_token is not None and last != sequence.last_token:
            sequence.gaps.append(last - sequence.last_token)
        sequence.first_token, sequence.last_token = first, last
        if finish_reason is not None:
            sequence.state, sequence.finish_reason = SequenceState.FINISHED, reason
        listener(sequence, Output(text, new_tokens, finish_reason))


def _serve(folder: Path, config: LLMConfig, connection: Connection, logs: tuple[str, str] | None) -> None:
    """The engine process: load the model, then, on this one thread, take in what the server sent (waiting
    for it only while there is nothing to run), run a step and send its outputs, until told to close or
    the server is gone. It logs as the server does (``logs``: its level and format)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A batch task keeps its share of the CPU but does not preempt the task that woke it: an engine woken
    # by a submit would otherwise take the server's core mid-request, and on an idle 2-core host the rest
    # of the request waited out the whole prefill (one-stream TTFT 1.12x raw generate()'s; 0.95x as batch).
    if hasattr(os, "sched_setscheduler"):  # Linux
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    if logs is not None:
        configure_logging(*logs)
    outbox: list[_Sent] = []
    sequences: dict[int, Sequence] = {}
    told: dict[int, int] = {}  # output tokens each sequence's outputs carried so far

    def listener(key: int) -> Listener:
        def listen(sequence: Sequence, output: Output) -> None:
            new_ids = sequence.output_ids[told.get(key, 0) :]
            told[key] = len(sequence.output_ids)
            if output.finish_reason is not None:
                sequences.pop(key, None)
                told.pop(key, None)
            fields = (output.text, output.new_tokens, output.finish_reason, sequence.finish_reason)
            outbox.append((key, *fields, new_ids, sequence.scheduled, sequence.first_token, sequence.last_token))

        return listen

    def flush() -> None:
        connection.send(("step", outbox[:], engine.counts()))
        outbox.clear()

    from modelserve.generative.engine import TransformersEngine  # preloaded by the forkserver

    try:
        engine = TransformersEngine(folder, config)
    except Exception as exc:  # whatever failed the load is the server's to report
        connection.send(("failed", str(exc) if isinstance(exc, ModelserveError) else f"{folder}: {exc!r}"))
        return
    connection.send(("ready", engine.vocab_size, engine.max_model_len, engine.memory_bytes()))
    log.info("engine process %d runs %s", os.getpid(), folder)
    closing = False
    while not closing:
        try:
            messages = [connection.recv()] if engine.idle else []
            while connection.poll():
                messages.append(connection.recv())
        except (EOFError, OSError):  # the server is gone
            break
        for message in messages:
            if message[0] == "submit":
                _, key, request_id, prompt_ids, params = message
                try:
                    sequences[key] = engine.submit(request_id, prompt_ids, params, listener(key))
                except ModelserveError:  # the server checked it first: only a bug gets here
                    log.exception("the engine refused a generation the server had admitted")
                    outbox.append((key, "", 0, "error", "abort", [], None, None, None))
            elif message[0] == "cancel" and (sequence := sequences.get(message[1])) is not None:
                engine.cancel(sequence)
            elif message[0] == "close":
                closing = True
        if not closing:
            engine.step()
            flush()
    engine.close()
    flush()
