"""The HTTP API fuzzed from its own OpenAPI document: schemathesis generates requests for every
documented operation and sends them to a real ``modelserve serve``. No answer may be a server error
or take longer than the request timeout, and every answer must have a documented status, content
type and body.

Every operation is fuzzed on a server without authentication, and again on one started with
``API_KEYS``: with an admin key, which reaches every route, and with no credentials, where every
route but the open probes and metrics must answer 401. ``GET /debug/profile`` records for ``seconds``
by design: a hook caps what it is asked to record at a few milliseconds, the default included.

The servers run in model control mode ``none``: every example model is loaded and load/unload are
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
from collections.abc import Callable, Iterator
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
from tests.server.credentials import ADMIN_KEY

SEED = 20250101
EXAMPLES = 20
KEYLESS_EXAMPLES = 5  # every answer but the open routes' is the same 401
INFERENCE_EXAMPLES = 150
REQUEST_TIMEOUT_S = 10.0
INFERENCE = r"/infer$|^/v1/predict$"
OPEN = r"^/(v2/)?health(/|$)|^/metrics$"  # AUTH_OPEN_ENDPOINTS' default: health and metrics
PROFILE_SECONDS = 0.005  # what /debug/profile records at most, instead of up to 60 s
# What the fixtures send to read the document and the served models; the server without keys ignores it.
CREDENTIALS = {"Authorization": f"Bearer {ADMIN_KEY}"}
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
}


@pytest.fixture(scope="module")
def fuzzed(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`modelserve serve` in control mode none, over the example repository."""
    root = tmp_path_factory.mktemp("fuzz")
    with serve(built_repository, root / "server.log", "--model-control-mode", "none") as running:
        yield running


@pytest.fixture(scope="module")
def guarded(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The same, with an admin API key; the document itself needs it too."""
    root = tmp_path_factory.mktemp("fuzz-auth")
    keys = {"API_KEYS": f"{ADMIN_KEY}:admin"}
    with serve(built_repository, root / "server.log", "--model-control-mode", "none", env=keys) as running:
        yield running


@pytest.fixture(scope="module")
def api(fuzzed: RunningServer) -> BaseSchema:
    """The open server's own OpenAPI document, with hooks that point part of the requests at real models."""
    return _schema(fuzzed, CONFIG)


@pytest.fixture(scope="module")
def keyed_api(guarded: RunningServer) -> BaseSchema:
    """The guarded server's document; every request sends the admin key."""
    return _schema(guarded, {**CONFIG, "auth": {"openapi": {"bearer": {"bearer": ADMIN_KEY}}}})


@pytest.fixture(scope="module")
def keyless_api(guarded: RunningServer) -> BaseSchema:
    """The guarded server's document; no request sends credentials (the bearer scheme is optional)."""
    return _schema(guarded, CONFIG)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """One connection pool for every generated request, as a client would keep."""
    with requests.Session() as pool:
        yield pool


def test_every_operation_answers_as_documented(
    api: BaseSchema, session: requests.Session, subtests: pytest.Subtests
) -> None:
    operations = _operations(api)
    assert len(operations) > 30, "the document lost operations"
    for operation in operations:
        with subtests.test(operation.label):
            _fuzz(operation, EXAMPLES, session)


def test_every_operation_answers_as_documented_with_an_admin_key(
    keyed_api: BaseSchema, session: requests.Session, subtests: pytest.Subtests
) -> None:
    for operation in _operations(keyed_api):
        with subtests.test(operation.label):
            _fuzz(operation, EXAMPLES, session, lambda status: status not in (401, 403))


def test_every_operation_but_the_open_ones_refuses_requests_without_credentials(
    keyless_api: BaseSchema, session: requests.Session, subtests: pytest.Subtests
) -> None:
    for operation in _operations(keyless_api):
        refused = not re.search(OPEN, operation.path)
        with subtests.test(operation.label):
            _fuzz(operation, KEYLESS_EXAMPLES, session, lambda status, refused=refused: (status == 401) == refused)


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


def _fuzz(
    operation: APIOperation, examples: int, session: requests.Session, expected: Callable[[int], bool] | None = None
) -> None:
    """Send ``examples`` generated requests, valid and invalid by the document, and check each answer
    against the document and, when given, against ``expected`` (its status)."""
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @seed(SEED)
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False)
    @given(case=strategy)
    def run(case: Case) -> None:
        response = case.call_and_validate(session=session)
        assert expected is None or expected(response.status_code), f"{response.status_code}: {response.text}"

    run()


def _schema(server: RunningServer, config: dict[str, Any]) -> BaseSchema:
    """``server``'s OpenAPI document under ``config``, with hooks that point part of the requests at real models
    and keep /debug/profile short."""
    schema = schemathesis.openapi.from_url(
        f"{server.url}/openapi.json", config=schemathesis.Config.from_dict(config), headers=CREDENTIALS
    )
    inputs = {model: _input_names(server, model) for model in _models(server)}

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

    @schema.hook
    def map_query(context: HookContext, query: dict[str, Any] | None) -> dict[str, Any] | None:
        if context.operation is None or context.operation.path != "/debug/profile":
            return query
        return _short_profile(query or {})

    return schema


def _short_profile(query: dict[str, Any]) -> dict[str, Any]:
    """``query`` asking for at most PROFILE_SECONDS of recording: a ``seconds`` the server would take (a
    number up to 60, or a list of them, of which it reads the last) is capped, and one left out is added,
    since its default is 10 s. Anything else in ``seconds`` is kept, for the server to refuse."""

    def capped(value: Any) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return value
        return PROFILE_SECONDS if PROFILE_SECONDS < number <= 60 else value

    seconds = query.get("seconds", PROFILE_SECONDS)
    return {**query, "seconds": [capped(v) for v in seconds] if isinstance(seconds, list) else capped(seconds)}


def _models(server: RunningServer) -> list[str]:
    index = httpx.post(
        f"{server.url}/v2/repository/index", json={"ready": True}, headers=CREDENTIALS, timeout=REQUEST_TIMEOUT_S
    )
    assert index.status_code == 200, index.text
    return sorted({entry["name"] for entry in index.json()})


def _input_names(server: RunningServer, model: str) -> list[str]:
    metadata = httpx.get(f"{server.url}/v2/models/{model}", headers=CREDENTIALS, timeout=REQUEST_TIMEOUT_S)
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
