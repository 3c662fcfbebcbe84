"""The OpenAI-compatible API, driven by the official ``openai`` SDK against a real server process."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from tests.builders import add_sub_onnx
from tests.e2e.server import RunningServer, serve
from tests.generative.builders import tiny_llama

MODEL = "tiny-llm"
CONFIG = "platform: llm\nllm:\n  max_model_len: 512\n  max_num_seqs: 4\n  max_waiting: 4\n  max_tokens: 12\n"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LLM and, to be refused by the generative routes, Triton's `simple`."""
    repository = tmp_path_factory.mktemp("openai") / "model_repository"
    tiny_llama(repository / MODEL / "1")
    (repository / MODEL / "config.yaml").write_text(CONFIG)
    add_sub_onnx(repository / "simple" / "1" / "model.onnx")
    return repository


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    with serve(repository, repository.parent / "server.log") as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server.url}/v1", api_key="not-checked", max_retries=0, timeout=30) as sdk:
        yield sdk


def test_models_lists_the_generative_models(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


def test_the_engine_process_logs_as_its_server_does(server: RunningServer) -> None:
    """The generative model runs in an engine process of its own, whose lines join the server's log in its
    format (JSON by default): one names the process and the model it runs."""
    output = server.output()
    lines = [orjson.loads(line) for line in output[: output.rfind("\n") + 1].splitlines()]
    (ready,) = [line for line in lines if line["logger"] == "modelserve.generative"]
    assert ready["level"] == "info"
    assert ready["message"].startswith("engine process ")
    assert str(Path(MODEL) / "1") in ready["message"]


def test_chat_completion_streamed_and_not_agree(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=10)  # type: ignore[arg-type]
    choice = whole.choices[0]
    assert choice.finish_reason in {"stop", "length"}
    assert whole.usage is not None
    assert whole.usage.prompt_tokens > 5
    assert 1 <= whole.usage.completion_tokens <= 10
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[-1].usage == whole.usage
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason


def test_completion_takes_text_or_token_ids(client: OpenAI) -> None:
    first = client.completions.create(model=MODEL, prompt="The model server", temperature=0, max_tokens=6)
    assert first.usage is not None
    assert first.usage.completion_tokens <= 6
    streamed = client.completions.create(
        model=MODEL, prompt="The model server", temperature=0, max_tokens=6, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == first.choices[0].text
    ids = client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=3)
    assert ids.usage is not None
    assert ids.usage.prompt_tokens == 3


@pytest.mark.parametrize(
    ("asked", "error", "words"),
    [
        ({"model": "nope"}, openai.NotFoundError, "unknown model: 'nope'"),
        ({"model": "simple"}, openai.BadRequestError, "not a generative one"),
        ({"max_tokens": 0}, openai.BadRequestError, "max_tokens"),
        ({"temperature": 3}, openai.BadRequestError, "temperature"),
        ({"top_p": 0}, openai.BadRequestError, "top_p"),
        ({"messages": []}, openai.BadRequestError, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, openai.BadRequestError, "role"),
        ({"messages": [{"role": "user", "content": "Hello " * 600}]}, openai.BadRequestError, "max_model_len"),
        ({"max_tokens": 600}, openai.BadRequestError, "ask for at most"),
        ({"presence_penalty": 1}, openai.BadRequestError, "presence_penalty"),
    ],
)
def test_bad_input_is_a_clear_4xx(client: OpenAI, asked: dict[str, object], error: type[Exception], words: str) -> None:
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]} | asked
    with pytest.raises(error) as refused:
        client.chat.completions.create(**request)  # type: ignore[call-overload]
    failure = refused.value
    assert isinstance(failure, openai.APIStatusError)
    # OpenAI's error object, which the SDK reads into the exception: message, type, param, code.
    assert words in failure.body["message"]  # type: ignore[index]
    assert failure.type == "invalid_request_error"
    assert failure.code == ("model_not_found" if error is openai.NotFoundError else None)


def test_malformed_json_is_a_400(server: RunningServer) -> None:
    answer = httpx.post(
        f"{server.url}/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_an_oversized_body_is_a_413_naming_the_limit(server: RunningServer) -> None:
    too_large = b" " * (64 * 2**20 + 1)  # MAX_INPUT_SIZE_MB's default, and a byte
    answer = httpx.post(
        f"{server.url}/v1/chat/completions", content=too_large, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert "MAX_INPUT_SIZE_MB" in answer.json()["error"]["message"]
    assert answer.json()["error"]["type"] == "invalid_request_error"


def scrape(server: RunningServer, series: str) -> float:
    """One series' value on /metrics (0 when absent)."""
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def engine_idle(server: RunningServer, timeout_s: float = 10.0) -> bool:
    """Whether the engine runs and queues nothing within ``timeout_s`` (it drops cancelled sequences at
    its next step)."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = [
            scrape(server, f'model_serving_generation_requests_{g}{{model="{MODEL}"}}') for g in ("running", "waiting")
        ]
        if not any(busy) or time.monotonic() > deadline:
            return not any(busy)
        time.sleep(0.05)


def test_a_caller_hanging_up_mid_stream_stops_its_generation(client: OpenAI, server: RunningServer) -> None:
    running = f'model_serving_generation_requests_running{{model="{MODEL}"}}'
    aborted = f'model_serving_generation_finished_total{{model="{MODEL}",reason="abort"}}'
    before = scrape(server, aborted)
    stream = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=400, stream=True, extra_body={"ignore_eos": True}
    )
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    assert scrape(server, running) == 1
    stream.close()
    deadline = time.monotonic() + 10
    while scrape(server, aborted) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scrape(server, aborted) == before + 1
    assert scrape(server, running) == 0
    line = server.access_lines(1, timeout_s=5)[-1]
    assert line["code"] == 499
    assert 3 <= line["output_tokens"] < 400


def test_a_generation_is_counted_and_logged_with_its_tokens(client: OpenAI, server: RunningServer) -> None:
    prompt_tokens = f'model_serving_generation_prompt_tokens_total{{model="{MODEL}"}}'
    before = scrape(server, prompt_tokens)
    answer = client.completions.create(model=MODEL, prompt="Paris is", max_tokens=5, user="alice")
    assert answer.usage is not None
    assert scrape(server, prompt_tokens) == before + answer.usage.prompt_tokens
    assert scrape(server, f'model_serving_generation_time_to_first_token_seconds_count{{model="{MODEL}"}}') >= 1
    lines = [line for line in server.access_lines(1, timeout_s=5) if line.get("user_id") == "alice"]
    deadline = time.monotonic() + 5
    while not lines and time.monotonic() < deadline:
        lines = [line for line in server.access_lines(1, timeout_s=1) if line.get("user_id") == "alice"]
    (line,) = lines
    assert line["model"] == MODEL
    assert line["protocol"] == "openai"
    assert line["input_tokens"] == answer.usage.prompt_tokens
    assert line["output_tokens"] == answer.usage.completion_tokens
    assert line["ttft_ms"] > 0
    assert line["latency_ms"] >= line["ttft_ms"]
    assert len(line["trace_id"]) == 32


def test_a_full_batch_and_queue_answer_429(client: OpenAI, server: RunningServer) -> None:
    """max_num_seqs 4 and max_waiting 4: an eighth long generation queues, a ninth is refused."""
    streams = [
        client.completions.create(
            model=MODEL, prompt="Hello", max_tokens=500, stream=True, extra_body={"ignore_eos": True}
        )
        for _ in range(8)
    ]
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            client.completions.create(model=MODEL, prompt="Hello", max_tokens=5)
        assert "retry later" in str(refused.value.body)
        assert refused.value.type == "rate_limit_error"
        assert refused.value.response.headers["retry-after"] == "1"
    finally:
        for stream in streams:
            stream.close()
        assert engine_idle(server)  # and the next test finds it so


# The Open Inference Protocol's generate extension, on the same server.


def test_v2_generate_answers_what_the_openai_route_does(client: OpenAI, server: RunningServer) -> None:
    expected = client.completions.create(model=MODEL, prompt="The model server", temperature=0, max_tokens=6)
    body = {"text_input": "The model server", "parameters": {"temperature": 0, "max_tokens": 6}}
    answer = httpx.post(f"{server.url}/v2/models/{MODEL}/generate", json=body, timeout=30)
    assert answer.status_code == 200
    document = answer.json()
    assert document["model_name"] == MODEL
    assert document["model_version"] == "1"
    assert document["text_output"] == expected.choices[0].text
    versioned = httpx.post(f"{server.url}/v2/models/{MODEL}/versions/1/generate", json=body, timeout=30)
    assert versioned.json()["text_output"] == document["text_output"]
    with httpx.stream("POST", f"{server.url}/v2/models/{MODEL}/generate_stream", json=body, timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = [orjson.loads(line[len("data: ") :]) for line in stream.iter_lines() if line.startswith("data: ")]
    assert "".join(e["text_output"] for e in events) == document["text_output"]
    assert events[-1]["finish_reason"] == document["finish_reason"]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v2/models/nope/generate", {"text_input": "hi"}, 404, "unknown model: 'nope'"),
        (f"/v2/models/{MODEL}/generate", {"text_input": ""}, 400, "text_input"),
        (f"/v2/models/{MODEL}/generate", {"text_input": "hi", "parameters": {"max_tokens": 0}}, 400, "max_tokens"),
        (f"/v2/models/{MODEL}/versions/7/generate_stream", {"text_input": "hi"}, 404, "version 7"),
        ("/v2/models/simple/generate_stream", {"text_input": "hi"}, 400, "not a generative one"),
    ],
)
def test_v2_generate_refuses_bad_input(
    server: RunningServer, path: str, body: dict[str, object], status: int, words: str
) -> None:
    answer = httpx.post(f"{server.url}{path}", json=body, timeout=30)
    assert answer.status_code == status
    assert words in answer.json()["error"]


def test_v2_infer_takes_text_input_as_triton_vllm_backend_does(server: RunningServer) -> None:
    """A BYTES text_input in, a BYTES text_output out, generated with the model's default sampling."""
    body = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["The model server"]}]}
    answer = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "text_output"
    assert output["datatype"] == "BYTES"
    assert isinstance(output["data"][0], str)


def test_a_generation_past_request_timeout_is_stopped_with_504(repository: Path, tmp_path: Path) -> None:
    long = {"model": MODEL, "prompt": "Hello", "max_tokens": 500, "ignore_eos": True}
    with serve(repository, tmp_path / "server.log", env={"REQUEST_TIMEOUT_SEC": "0.1"}) as server:
        answer = httpx.post(f"{server.url}/v1/completions", json=long, timeout=30)
        assert answer.status_code == 504
        assert "REQUEST_TIMEOUT_SEC" in answer.json()["error"]["message"]
        assert answer.json()["error"]["type"] == "server_error"
        with httpx.stream("POST", f"{server.url}/v1/completions", json=long | {"stream": True}, timeout=30) as stream:
            events = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert "REQUEST_TIMEOUT_SEC" in events[-2]
        assert events[-1] == "data: [DONE]"
        assert engine_idle(server)
        stopped = [line for line in server.access_lines(2) if line["model"] == MODEL]
        assert [line["code"] for line in stopped] == [504, 504]
        assert all(line["output_tokens"] < 500 for line in stopped)


def test_a_running_generation_counts_as_a_request_inside_its_model(client: OpenAI, server: RunningServer) -> None:
    """Eviction leaves a model with requests inside alone: a generation must count as one."""
    inside = f'model_serving_requests_in_flight{{model="{MODEL}",version="1"}}'
    stream = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=400, stream=True, extra_body={"ignore_eos": True}
    )
    try:
        next(iter(stream))
        assert scrape(server, inside) == 1
        assert 0 < scrape(server, f'model_serving_generation_kv_cache_usage_ratio{{model="{MODEL}"}}') < 1
    finally:
        stream.close()
    assert engine_idle(server)
    deadline = time.monotonic() + 10
    while scrape(server, inside) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scrape(server, inside) == 0
    assert scrape(server, f'model_serving_generation_kv_cache_usage_ratio{{model="{MODEL}"}}') == 0


def test_running_streams_finish_within_the_grace_on_sigterm(repository: Path, tmp_path: Path) -> None:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 300, "ignore_eos": True, "stream": True}
    env = {"SHUTDOWN_GRACE_SEC": "20"}
    with serve(repository, tmp_path / "server.log", env=env) as server:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as stream:
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            os.killpg(server.process.pid, signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data: ")]
        assert server.process.wait(timeout=30) == 0
    chunks = [orjson.loads(line[len("data: ") :]) for line in [first, *rest[:-1]]]
    assert rest[-1] == "data: [DONE]"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
