"""The HTTP API fuzzed from its own OpenAPI document: schemathesis generates requests for every
documented operation and sends them to a real ``modelserve serve``. No answer may be a server error
or take longer than the request timeout, and every answer must have a documented status, content
type and body.

The server runs in model control mode ``none``: every example model is loaded and load/unload are
refused, so no generated request changes what the next one meets. Generated model names and tensor
names are swapped, part of the time, for the served ones: otherwise nearly every request would stop
at 404 and the tensor decoding would never be reached. Generation is derandomised with a fixed seed,
so a run in CI sends the same requests as a run on a laptop.

The document is read from the running server in a fixture, and each operation's schemathesis
strategy runs under Hypothesis here: schemathesis.pytest.from_fixture, made for this, fails under
pytest 9.2 (it sets a node attribute pytest no longer has).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import given, seed, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode, HookContext

from tests.e2e.server import RunningServer, serve

SEED = 20250101
EXAMPLES = 20
INFERENCE_EXAMPLES = 150
REQUEST_TIMEOUT_S = 10.0
INFERENCE = r"/infer$|^/v1/predict$"
# Shapes numpy cannot hold, which a request may still pair with empty data: dimensions whose product
# overflows (made to fit no data by a zero), and more dimensions than numpy allows.
HUGE_SHAPES = st.one_of(
    st.lists(st.sampled_from([0, 1, 16, 2**31, 2**62, 2**63 - 1]), min_size=1, max_size=4),
    st.lists(st.sampled_from([0, 1]), min_size=65, max_size=70),
)

CONFIG: dict[str, Any] = {
    "seed": SEED,
    "request-timeout": REQUEST_TIMEOUT_S,
    "checks": {
        # Requests valid by the document are still refused by design: load/unload in control mode none,
        # shared-memory keys that name nothing, tensors that do not fit the model.
        "positive_data_acceptance": {"enabled": False},
        # The server ignores what it does not use (unknown fields, a control body that is not an object),
        # as Triton does, so a request outside the document may well succeed.
        "negative_data_rejection": {"enabled": False},
    },
    "operations": [
        # CUDA shared memory answers 501 by design, and the document says so.
        {
            "include-path-regex": "cudasharedmemory",
            "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "501"]}},
        },
    ],
}


@pytest.fixture(scope="module")
def fuzzed(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`modelserve serve` in control mode none, over the example repository."""
    root = tmp_path_factory.mktemp("fuzz")
    with serve(built_repository, root / "server.log", "--model-control-mode", "none") as running:
        yield running


@pytest.fixture(scope="module")
def api(fuzzed: RunningServer) -> BaseSchema:
    """The server's own OpenAPI document, with hooks that point part of the requests at real models."""
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json", config=schemathesis.Config.from_dict(CONFIG))
    inputs = {model: _input_names(fuzzed, model) for model in _models(fuzzed)}

    # Hypothesis draws the first of sampled_from's choices most often: the served names come first.
    @schema.hook
    def flatmap_path_parameters(context: HookContext, path_parameters: dict[str, Any] | None) -> Any:
        strategy = st.just(path_parameters)
        if not path_parameters:
            return strategy
        if "model" in path_parameters:
            names = st.sampled_from([*inputs, path_parameters["model"]])
            strategy = strategy.flatmap(lambda p: names.map(lambda name: {**p, "model": name}))
        if "version" in path_parameters:
            versions = st.sampled_from(["1", path_parameters["version"]])
            strategy = strategy.flatmap(lambda p: versions.map(lambda version: {**p, "version": version}))
        return strategy

    @schema.hook
    def flatmap_body(context: HookContext, body: Any) -> Any:
        if not isinstance(body, dict):
            return st.just(body)
        strategy = st.just(body)
        if isinstance(body.get("model"), str):
            names = st.sampled_from([*inputs, body["model"]])
            strategy = strategy.flatmap(lambda b: names.map(lambda name: {**b, "model": name}))
        if isinstance(body.get("inputs"), list):
            tensor_names = sorted({name for names in inputs.values() for name in names})
            strategy = strategy.flatmap(lambda b: _steered(b, tensor_names))
        return strategy

    return schema


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """One connection pool for every generated request, as a client would keep."""
    with requests.Session() as pool:
        yield pool


def test_every_operation_answers_as_documented(
    api: BaseSchema, session: requests.Session, subtests: pytest.Subtests
) -> None:
    # /debug/profile samples the CPU for up to 60 s a request by design; test_profiling.py checks its arguments.
    operations = [operation for operation in _operations(api) if operation.path != "/debug/profile"]
    assert len(operations) > 30, "the document lost operations"
    for operation in operations:
        with subtests.test(operation.label):
            _fuzz(operation, EXAMPLES, session)


def test_inference_refuses_bad_tensors_with_4xx(
    api: BaseSchema, session: requests.Session, subtests: pytest.Subtests
) -> None:
    operations = [operation for operation in _operations(api) if re.search(INFERENCE, operation.path)]
    assert len(operations) == 3
    for operation in operations:
        with subtests.test(operation.label):
            _fuzz(operation, INFERENCE_EXAMPLES, session)


def _operations(schema: BaseSchema) -> list[APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation: APIOperation, examples: int, session: requests.Session) -> None:
    """Send ``examples`` generated requests, valid and invalid by the document, and check each answer."""
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @seed(SEED)
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False)
    @given(case=strategy)
    def run(case: Case) -> None:
        case.call_and_validate(session=session)

    run()


def _models(server: RunningServer) -> list[str]:
    index = httpx.post(f"{server.url}/v2/repository/index", json={"ready": True}, timeout=REQUEST_TIMEOUT_S)
    assert index.status_code == 200, index.text
    return sorted({entry["name"] for entry in index.json()})


def _input_names(server: RunningServer, model: str) -> list[str]:
    metadata = httpx.get(f"{server.url}/v2/models/{model}", timeout=REQUEST_TIMEOUT_S)
    assert metadata.status_code == 200, metadata.text
    return [tensor["name"] for tensor in metadata.json()["inputs"]]


def _steered(body: dict[str, Any], names: list[str]) -> Any:
    """``body`` with each input's name kept or swapped for one a served model has, and its shape kept
    or swapped for one numpy cannot hold: huge dimensions, or more of them than it allows."""
    inputs = [
        st.fixed_dictionaries(
            {"name": st.sampled_from([*names, item["name"]]), "shape": st.one_of(HUGE_SHAPES, st.just(item["shape"]))}
        ).map(lambda steer, item=item: {**item, **steer})
        if isinstance(item, dict) and isinstance(item.get("name"), str) and "shape" in item
        else st.just(item)
        for item in body["inputs"]
    ]
    return st.tuples(*inputs).map(lambda items: {**body, "inputs": list(items)})
