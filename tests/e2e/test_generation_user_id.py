"""Who asked for a generation, in its access line's ``user_id``: the OpenAI ``user`` field when the request
names one, else who its credentials say it is (an API key's fingerprint, a JWT's ``sub``), over HTTP and
gRPC alike, on a real server with API_KEYS and JWT_SECRET set."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from openai import OpenAI

from tests.e2e.server import RunningServer, serve
from tests.generative.builders import tiny_llama
from tests.server.credentials import API_KEYS, INFER_KEY, SECRET, bearer, token

MODEL = "tiny-llm"
CONFIG = "platform: llm\nllm:\n  max_model_len: 256\n  max_num_seqs: 2\n  max_tokens: 3\n"
# What the operator computes from the key: printf %s "$KEY" | sha256sum | cut -c1-12
INFER_KEY_NAME = "key-" + hashlib.sha256(INFER_KEY.encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("generation_user_id") / "model_repository"
    tiny_llama(repository / MODEL / "1")
    (repository / MODEL / "config.yaml").write_text(CONFIG)
    env = {"API_KEYS": API_KEYS, "JWT_SECRET": SECRET}
    with serve(repository, repository.parent / "server.log", env=env) as running:
        yield running


def traced() -> tuple[str, dict[str, str]]:
    """A fresh trace id, and the ``traceparent`` header that gives it to a request: it finds the request's line."""
    trace_id = uuid.uuid4().hex
    return trace_id, {"traceparent": f"00-{trace_id}-{'1' * 16}-01"}


def logged(server: RunningServer, trace_id: str) -> dict[str, Any]:
    """The access line of the request with ``trace_id``, written by a thread shortly after its answer left."""
    deadline = time.monotonic() + 10
    while True:
        found = [line for line in server.access_lines(1, timeout_s=0) if line.get("trace_id") == trace_id]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (line,) = found
    assert line["model"] == MODEL
    assert line["code"] in (200, "OK")
    assert line["output_tokens"] >= 1
    return line


def openai_user_id(server: RunningServer, credential: str, **asked: Any) -> Any:
    trace_id, headers = traced()
    with OpenAI(base_url=f"{server.url}/v1", api_key=credential, max_retries=0, timeout=30) as client:
        answer = client.completions.create(model=MODEL, prompt="Hello", max_tokens=2, extra_headers=headers, **asked)
        if asked.get("stream"):
            assert list(answer)
    return logged(server, trace_id)["user_id"]


def grpc_user_id(server: RunningServer, credential: str) -> Any:
    trace_id, headers = traced()
    prompt = grpcclient.InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"Hello"], dtype=np.object_))
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.infer(MODEL, [prompt], headers={**headers, "authorization": f"Bearer {credential}"})
    return logged(server, trace_id)["user_id"]


def test_an_api_key_is_named_by_its_fingerprint_when_no_user_is_given(server: RunningServer) -> None:
    assert openai_user_id(server, INFER_KEY) == INFER_KEY_NAME
    assert openai_user_id(server, INFER_KEY, stream=True) == INFER_KEY_NAME
    assert grpc_user_id(server, INFER_KEY) == INFER_KEY_NAME
    trace_id, headers = traced()
    body = {"text_input": "Hello", "parameters": {"max_tokens": 2}}
    answer = httpx.post(
        f"{server.url}/v2/models/{MODEL}/generate", json=body, headers={**headers, **bearer(INFER_KEY)}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert logged(server, trace_id)["user_id"] == INFER_KEY_NAME


def test_a_jwt_is_named_by_its_subject(server: RunningServer) -> None:
    carol = token(SECRET, sub="carol")
    assert openai_user_id(server, carol) == "carol"
    assert grpc_user_id(server, carol) == "carol"


def test_the_openai_user_field_wins(server: RunningServer) -> None:
    assert openai_user_id(server, INFER_KEY, user="alice") == "alice"
    assert openai_user_id(server, token(SECRET, sub="carol"), user="alice") == "alice"


def test_the_key_itself_never_reaches_the_log(server: RunningServer) -> None:
    openai_user_id(server, INFER_KEY)
    assert INFER_KEY not in server.output()
