"""Generative models over gRPC, driven by tritonclient.grpc as Triton's vLLM backend users drive it: whole
answers on ModelInfer, decoupled pieces on ModelStreamInfer, and a cancelled call or stream, or a passed
deadline, stopping its generation at the engine's next step."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.builders import add_sub_onnx
from tests.e2e.server import RunningServer, serve
from tests.generative.builders import tiny_llama

MODEL = "tiny-llm"
CONFIG = "platform: llm\nllm:\n  max_model_len: 512\n  max_num_seqs: 4\n  max_waiting: 4\n  max_tokens: 12\n"
GREEDY = {"temperature": 0, "max_tokens": 10, "ignore_eos": True}
LONG = {"max_tokens": 480, "ignore_eos": True}  # nearly max_model_len: far longer than any test waits for
RUNNING = "model_serving_generation_requests_running"
FINISHED = "model_serving_generation_finished_total"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The tiny LLM, and Triton's `simple` for the requests that must go on being answered."""
    repository = tmp_path_factory.mktemp("generation_grpc") / "model_repository"
    tiny_llama(repository / MODEL / "1")
    (repository / MODEL / "config.yaml").write_text(CONFIG)
    add_sub_onnx(repository / "simple" / "1" / "model.onnx")
    with serve(repository, repository.parent / "server.log") as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_address) as triton:
        yield triton


def text(name: str, value: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
    return tensor


def flag(name: str, value: bool) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value]))
    return tensor


def prompt(words: str, sampling: dict[str, Any], **flags: bool) -> list[grpcclient.InferInput]:
    """A request as Triton's vLLM backend sample builds one: the prompt, the sampling parameters as a JSON
    input, and BOOL inputs such as ``stream``."""
    inputs = [text("text_input", words), text("sampling_parameters", json.dumps(sampling))]
    return inputs + [flag(name, value) for name, value in flags.items()]


def output(result: grpcclient.InferResult, name: str = "text_output") -> Any:
    return result.as_numpy(name)[0]


def final(result: grpcclient.InferResult) -> bool:
    return bool(result.get_response().parameters["triton_final_response"].bool_param)


class Stream:
    """A tritonclient stream whose answers queue up, for the test to read at its pace."""

    def __init__(self, triton: grpcclient.InferenceServerClient, headers: dict[str, str] | None = None) -> None:
        self.answers: queue.Queue[tuple[grpcclient.InferResult | None, InferenceServerException | None]]
        self.answers = queue.Queue()
        triton.start_stream(callback=lambda result, error: self.answers.put((result, error)), headers=headers)

    def next(self) -> grpcclient.InferResult:
        result, error = self.answers.get(timeout=30)
        assert error is None, error.message()
        assert result is not None
        return result

    def until_final(self) -> list[grpcclient.InferResult]:
        """One request's answers, up to the one marked final."""
        results = [self.next()]
        while not final(results[-1]):
            results.append(self.next())
        return results


def until(check: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never happened within {timeout_s} s: {what}"
        time.sleep(0.05)


def traced() -> tuple[str, dict[str, str]]:
    """A fresh trace id, and the ``traceparent`` header that gives it to a call: it finds the call's line."""
    trace_id = uuid.uuid4().hex
    return trace_id, {"traceparent": f"00-{trace_id}-{'1' * 16}-01"}


def logged(server: RunningServer, trace_id: str) -> dict[str, Any]:
    """The access line of the call with ``trace_id``, written by a thread shortly after its answer left."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        found[:] = [line for line in server.access_lines(1, timeout_s=0) if line.get("trace_id") == trace_id]
        return bool(found)

    until(written, f"the access line of trace {trace_id}")
    (line,) = found
    return line


def stops(server: RunningServer, trace_id: str, code: str, stop: Callable[[], None], aborted_before: float) -> None:
    """``stop`` ends a running generation: the engine runs nothing within a bounded time, the generation
    is counted as aborted, and its access line has ``code`` and fewer tokens than it asked for."""
    stop()
    until(lambda: server.metric(RUNNING, model=MODEL) == 0, "no generation running")
    until(lambda: server.metric(FINISHED, model=MODEL, reason="abort") == aborted_before + 1, "one more abort")
    line = logged(server, trace_id)
    assert line["code"] == code
    assert line["model"] == MODEL
    assert line["protocol"] == "grpc"
    assert 1 <= line["output_tokens"] < LONG["max_tokens"]


def still_serves(triton: grpcclient.InferenceServerClient) -> None:
    """A short generation and a tensor model are answered as before."""
    assert output(triton.infer(MODEL, prompt("Hello", {"max_tokens": 3})))
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [grpcclient.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    np.testing.assert_array_equal(triton.infer("simple", inputs).as_numpy("OUTPUT0"), 2 * a)


def test_a_streamed_generation_comes_in_pieces_that_make_the_whole_answer(
    client: grpcclient.InferenceServerClient,
) -> None:
    whole = client.infer(MODEL, prompt("The model server", GREEDY, return_finish_reason=True), request_id="w")
    assert whole.get_response().id == "w"
    assert output(whole, "finish_reason") == b"length"
    stream = Stream(client)
    try:
        inputs = prompt("The model server", GREEDY, stream=True, return_num_output_tokens=True)
        client.async_stream_infer(MODEL, inputs, request_id="s", enable_empty_final_response=True)
        pieces = stream.until_final()
    finally:
        client.stop_stream()
    assert len(pieces) >= 3
    assert b"".join(output(piece) for piece in pieces) == output(whole)
    assert [final(piece) for piece in pieces] == [False] * (len(pieces) - 1) + [True]
    assert {piece.get_response().id for piece in pieces} == {"s"}
    assert sum(int(output(piece, "num_output_tokens")) for piece in pieces) == GREEDY["max_tokens"]


def test_stream_may_be_a_request_parameter_and_without_it_one_answer_comes(
    client: grpcclient.InferenceServerClient,
) -> None:
    whole = output(client.infer(MODEL, prompt("Paris is", GREEDY)))
    stream = Stream(client)
    try:
        client.async_stream_infer(MODEL, prompt("Paris is", GREEDY), request_id="one")
        (single,) = stream.until_final()
        client.async_stream_infer(MODEL, prompt("Paris is", GREEDY), request_id="many", parameters={"stream": True})
        pieces = stream.until_final()
    finally:
        client.stop_stream()
    assert output(single) == whole
    assert len(pieces) > 1
    assert b"".join(output(piece) for piece in pieces) == whole


def test_several_generations_on_one_stream_interleave(client: grpcclient.InferenceServerClient) -> None:
    """Decoupled as Triton's vLLM backend is: a short generation sent after a long one ends first."""
    stream = Stream(client)
    try:
        # Long enough that it still runs when the short one arrives, on a host busy with other work too
        # (60 tokens once finished first under a second test worker).
        long, short = ({"max_tokens": n, "ignore_eos": True} for n in (400, 2))
        client.async_stream_infer(MODEL, prompt("Hello", long, stream=True), request_id="long")
        client.async_stream_infer(MODEL, prompt("Hello", short, stream=True), request_id="short")
        finals: list[str] = []
        while len(finals) < 2:
            result = stream.next()
            if final(result):
                finals.append(result.get_response().id)
    finally:
        client.stop_stream()
    assert finals == ["short", "long"]


def test_cancelling_a_stream_stops_its_generations(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    aborted = server.metric(FINISHED, model=MODEL, reason="abort")
    trace_id, headers = traced()
    stream = Stream(client, headers)
    client.async_stream_infer(MODEL, prompt("Hello", LONG, stream=True), request_id="long")
    for _ in range(3):
        stream.next()
    assert server.metric(RUNNING, model=MODEL) == 1
    stops(server, trace_id, "CANCELLED", lambda: client.stop_stream(cancel_requests=True), aborted)
    still_serves(client)


def test_cancelling_an_asyncio_stream_stops_every_generation_on_it(server: RunningServer) -> None:
    aborted = server.metric(FINISHED, model=MODEL, reason="abort")

    async def two_generations_then_cancel() -> set[str]:
        async with aioclient.InferenceServerClient(server.grpc_address) as triton:
            held = asyncio.Event()

            async def requests() -> Any:
                for request_id in ("first", "second"):
                    yield {"model_name": MODEL, "inputs": prompt("Hello", LONG, stream=True), "request_id": request_id}
                await held.wait()  # the stream stays open until it is cancelled

            responses = triton.stream_infer(requests())
            answered: set[str] = set()
            async for result, error in responses:
                assert error is None, error.message()
                answered.add(result.get_response().id)
                if len(answered) == 2:
                    break
            assert server.metric(RUNNING, model=MODEL) == 2
            responses.cancel()
            return answered

    assert asyncio.run(two_generations_then_cancel()) == {"first", "second"}
    until(lambda: server.metric(RUNNING, model=MODEL) == 0, "no generation running")
    until(lambda: server.metric(FINISHED, model=MODEL, reason="abort") == aborted + 2, "two more aborts")


def test_cancelling_a_call_stops_its_generation(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    aborted = server.metric(FINISHED, model=MODEL, reason="abort")
    answers: queue.Queue[object] = queue.Queue()
    trace_id, headers = traced()
    call = client.async_infer(
        MODEL, prompt("Hello", LONG), callback=lambda result, error: answers.put(error), headers=headers
    )
    until(lambda: server.metric(RUNNING, model=MODEL) == 1, "the generation running")
    stops(server, trace_id, "CANCELLED", call.cancel, aborted)
    assert "Locally cancelled" in str(answers.get(timeout=10))
    still_serves(client)


def test_a_passed_deadline_stops_the_generation(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    """The deadline is a quarter of the time the whole generation takes here, so it passes mid-way on a
    fast host or a slow one."""
    started = time.monotonic()
    client.infer(MODEL, prompt("Hello", LONG))
    deadline_s = (time.monotonic() - started) / 4
    aborted = server.metric(FINISHED, model=MODEL, reason="abort")
    refused: list[InferenceServerException] = []
    trace_id, headers = traced()

    def call_with_deadline() -> None:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, prompt("Hello", LONG), client_timeout=deadline_s, headers=headers)
        refused.append(caught.value)

    stops(server, trace_id, "DEADLINE_EXCEEDED", call_with_deadline, aborted)
    assert "DEADLINE_EXCEEDED" in str(refused[0].status())
    still_serves(client)


def test_a_generation_has_its_access_line(server: RunningServer, client: grpcclient.InferenceServerClient) -> None:
    inputs = prompt("Paris is", {"max_tokens": 4, "ignore_eos": True}, return_num_input_tokens=True)
    trace_id, headers = traced()
    result = client.infer(MODEL, inputs, headers=headers)
    line = logged(server, trace_id)
    assert line["code"] == "OK"
    assert line["model"] == MODEL
    assert line["protocol"] == "grpc"
    assert line["input_tokens"] == int(output(result, "num_input_tokens")) > 1
    assert line["output_tokens"] == 4
    assert line["finish_reason"] == "length"
    assert 0 < line["ttft_ms"] <= line["latency_ms"]
    assert line["user_id"] is None  # no credentials on this server


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        (prompt("Hello", {"max_tokens": 4}, stream=True), "stream true needs ModelStreamInfer"),
        (prompt("Hello", {"max_tokens": 0}), "max_tokens"),
        (prompt("Hello", {"temperature": "hot"}), "temperature"),
        ([text("text_input", "Hello"), text("sampling_parameters", "{not json")], "not JSON"),
        ([text("prompt", "Hello")], "input 'prompt' is not one a generative model takes"),
        (prompt("Hello", {}, return_logprobs=True), "return_logprobs is not supported"),
    ],
)
def test_bad_requests_are_invalid_argument(
    client: grpcclient.InferenceServerClient, inputs: list[grpcclient.InferInput], words: str
) -> None:
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, inputs)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert words in refused.value.message()


def test_a_bad_request_on_a_stream_is_an_error_answer_and_the_stream_goes_on(
    client: grpcclient.InferenceServerClient,
) -> None:
    stream = Stream(client)
    try:
        client.async_stream_infer(MODEL, prompt("Hello", {"max_tokens": 0}, stream=True), request_id="bad")
        result, error = stream.answers.get(timeout=30)
        client.async_stream_infer(MODEL, prompt("Hello", {"max_tokens": 2}, stream=True), request_id="good")
        pieces = stream.until_final()
    finally:
        client.stop_stream()
    assert result is None
    assert error is not None
    assert "max_tokens" in error.message()
    assert {piece.get_response().id for piece in pieces} == {"good"}


def test_the_documented_grpc_example_runs(server: RunningServer) -> None:
    """docs/GENERATIVE.md's gRPC example, run verbatim against this server."""
    document = (Path(__file__).resolve().parents[2] / "docs" / "GENERATIVE.md").read_text()
    section = document[document.index("## gRPC") :]
    section = section[: section.index("\n## ", 1)]
    (code,) = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    code = code.replace("localhost:8001", server.grpc_address)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    count, _, agrees = run.stdout.strip().partition(" pieces: ")
    assert int(count) > 1
    assert agrees == "True"
