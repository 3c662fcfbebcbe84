"""A repository on S3 (moto's server mode, reached through s3fs as in production): keys that would
escape the mirror, SHA256SUMS that must list every file, and stores that do not answer."""

from __future__ import annotations

import hashlib
import http.server
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import fsspec
import pytest

from modelserve.errors import ModelLoadError, ModelNotFound, StoreUnavailable
from modelserve.repository.remote import ANSWER_TTL_S, MANIFEST, MirroredRepository
from tests.builders import scale_onnx
from tests.clock import Clock
from tests.e2e.server import free_port
from tests.s3 import Unanswering, running_s3

BUCKET = "models"
_prefixes = itertools.count()

# The longest a lookup may take against a store that does not answer, with the 1 s timeouts the tests
# set: three attempts and their back-off, with room for a loaded machine. Without bounds, s3fs's and
# botocore's retries multiply to minutes.
OUTAGE_BOUND_S = 20.0


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        boto3.client("s3", endpoint_url=url, **_boto_credentials()).create_bucket(Bucket=BUCKET)
        yield url


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def configure_s3(monkeypatch: pytest.MonkeyPatch, endpoint: str, **config_kwargs: Any) -> None:
    """Point s3fs at ``endpoint`` the way an operator does, through fsspec's configuration
    (``FSSPEC_S3='{"endpoint_url": ..., "config_kwargs": {...}}'`` in the environment)."""
    options: dict[str, Any] = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    if config_kwargs:
        options["config_kwargs"] = config_kwargs
    monkeypatch.setitem(fsspec.config.conf, "s3", options)


class Store:
    """One repository prefix of the bucket, written object by object with boto3, so keys arrive
    exactly as given (S3 takes ``..`` and empty components in a key as plain characters)."""

    def __init__(self, endpoint: str) -> None:
        self.client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        self.prefix = f"repo{next(_prefixes)}"
        self.url = f"s3://{BUCKET}/{self.prefix}"

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}", Body=body)

    def put_model(self, name: str, tmp_path: Path) -> bytes:
        """A one-version ONNX model; returns the model file's bytes."""
        path = scale_onnx(tmp_path / f"{name}.onnx", factor=2.0)
        self.put(f"{name}/1/model.onnx", path.read_bytes())
        return path.read_bytes()


@pytest.fixture
def store(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    configure_s3(monkeypatch, endpoint, connect_timeout=5, read_timeout=5)
    return Store(endpoint)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- keys that would place a file outside the model's folder ------------------------------------------


@pytest.mark.parametrize(
    ("key", "landing"),
    [
        # leaves MODEL_CACHE_DIR altogether: from cache/<mirror>/m/1, four levels up is the test's folder
        ("m/1/../../../../evil.txt", lambda tmp_path, mirror: tmp_path / "evil.txt"),
        # stays inside MODEL_CACHE_DIR but lands in another model's mirror: seen only once normalised
        ("m/1/../../other/1/model.onnx", lambda tmp_path, mirror: mirror / "other" / "1" / "model.onnx"),
        # an absolute path below the model folder
        ("m//tmp/evil.txt", None),
        # '.' names the same local file as another key
        ("m/./1/model.onnx", None),
    ],
    ids=["out-of-the-cache", "into-another-model", "absolute", "dot"],
)
def test_a_key_that_leaves_the_model_folder_is_refused_before_anything_is_written(
    store: Store, tmp_path: Path, key: str, landing: Callable[[Path, Path], Path] | None
) -> None:
    store.put_model("m", tmp_path)
    store.put(key, b"not a model file")
    repository = MirroredRepository(store.url, tmp_path / "cache")
    repository.check()

    with pytest.raises(ModelLoadError) as caught:
        repository.source("m")

    message = caught.value.message
    assert f"{BUCKET}/{store.prefix}/{key}" in message, "the error names the key as stored"
    assert "refused" in message
    assert not (repository.root / "m").exists(), "nothing of the model is written"
    if landing is not None:
        assert not landing(tmp_path, repository.root).exists()


def test_a_copy_outside_the_folder_named_by_an_old_manifest_is_never_removed(store: Store, tmp_path: Path) -> None:
    """A mirror written before keys were checked may list a path outside its folder; when the key
    leaves the store, the mirror removes what its manifest lists, and must not reach outside."""
    store.put_model("m", tmp_path)
    repository = MirroredRepository(store.url, tmp_path / "cache")
    repository.source("m")
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file")
    manifest_path = repository.root / "m" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["1/../../../../victim.txt"] = {"sha256": sha256(b"x"), "stamp": "old"}
    manifest_path.write_text(json.dumps(manifest))

    assert repository.source("m").files[1].is_file()
    assert victim.read_text() == "someone else's file"


def test_folder_markers_are_not_files(store: Store, tmp_path: Path) -> None:
    """Consoles and some tools create empty `folder/` objects; they are folders, not files to copy."""
    model = store.put_model("m", tmp_path)
    store.put("m/", b"")
    store.put("m/1/", b"")
    repository = MirroredRepository(store.url, tmp_path / "cache")

    assert repository.source("m").files[1].read_bytes() == model


def test_a_file_at_the_root_of_the_store_is_a_model_mirrored_as_version_1(store: Store, tmp_path: Path) -> None:
    """`aws s3 cp resnet50-fp16.trt s3://model-storage/models/`, as the runbooks deploy a model."""
    first = scale_onnx(tmp_path / "a.onnx", factor=2.0).read_bytes()
    second = scale_onnx(tmp_path / "b.onnx", factor=5.0).read_bytes()
    store.put("scale.onnx", first)
    store.put("notes.txt", b"not a model")
    store.put_model("folder", tmp_path)
    repository = MirroredRepository(store.url, tmp_path / "cache")

    assert repository.names() == ["folder", "scale"]
    assert repository.contains("scale")
    source = repository.source("scale")
    assert source.files == {1: repository.root / "scale" / "1" / "model.onnx"}
    assert source.files[1].read_bytes() == first

    store.put("scale.onnx", second)  # replaced in the store: the next load brings the new bytes
    assert repository.source("scale").files[1].read_bytes() == second
    with pytest.raises(ModelNotFound):
        repository.source("notes")


# -- SHA256SUMS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("unlisted", ["config.yaml", "1/extra.onnx"])
def test_a_file_missing_from_published_checksums_is_refused(store: Store, tmp_path: Path, unlisted: str) -> None:
    model = store.put_model("m", tmp_path)
    extra = b"max_batch_size: 0\n" if unlisted == "config.yaml" else scale_onnx(tmp_path / "v2.onnx").read_bytes()
    store.put(f"m/{unlisted}", extra)
    store.put("m/SHA256SUMS", f"{sha256(model)}  1/model.onnx\n".encode())
    repository = MirroredRepository(store.url, tmp_path / "cache")

    with pytest.raises(ModelLoadError) as caught:
        repository.source("m")

    assert f"{unlisted} is not in SHA256SUMS" in caught.value.message
    assert not (repository.root / "m" / unlisted).exists(), "a file that cannot be verified is not copied"

    store.put("m/SHA256SUMS", f"{sha256(model)}  1/model.onnx\n{sha256(extra)}  ./{unlisted}\n".encode())
    repository.source("m")
    assert (repository.root / "m" / unlisted).read_bytes() == extra


def test_a_version_folder_the_checksums_do_not_name_is_left_out_until_published(store: Store, tmp_path: Path) -> None:
    model = store.put_model("m", tmp_path)
    store.put("m/SHA256SUMS", f"{sha256(model)}  1/model.onnx\n".encode())
    newer = scale_onnx(tmp_path / "v2.onnx").read_bytes()
    store.put("m/2/model.onnx", newer)  # copied, not yet published
    repository = MirroredRepository(store.url, tmp_path / "cache")

    assert list(repository.source("m").files) == [1]
    assert not (repository.root / "m" / "2").exists()

    store.put("m/SHA256SUMS", f"{sha256(model)}  1/model.onnx\n{sha256(newer)}  2/model.onnx\n".encode())
    assert list(repository.source("m").files) == [1, 2]


# -- contains: answers kept for a while ------------------------------------------------------------------


def test_answers_are_kept_for_a_few_seconds_and_loads_always_ask_afresh(store: Store, tmp_path: Path) -> None:
    clock = Clock(1000.0)
    repository = MirroredRepository(store.url, tmp_path / "cache", clock=clock)
    assert not repository.contains("late")
    assert not repository.contains("later")
    store.put_model("late", tmp_path)
    store.put_model("later", tmp_path)

    assert not repository.contains("late"), "the answer of a moment ago stands: no round trip to the store"
    assert repository.source("late").files[1].is_file(), "a load asks the store afresh"
    assert repository.contains("late")

    clock.now += ANSWER_TTL_S
    assert repository.contains("later"), "after ANSWER_TTL_S the store is asked again"
    with pytest.raises(ModelNotFound, match="absent"):
        repository.source("absent")


# -- stores that do not answer -----------------------------------------------------------------------------


class Failing(http.server.ThreadingHTTPServer):
    """An S3 endpoint that answers every request 503 ServiceUnavailable, as S3 does under an outage."""

    daemon_threads = True
    MESSAGE = "the store is down for maintenance"

    def __init__(self) -> None:
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _FailingHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


class _FailingHandler(http.server.BaseHTTPRequestHandler):
    server: Failing

    def _answer(self) -> None:
        self.server.requests += 1
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
            f"<Message>{Failing.MESSAGE}</Message></Error>"
        ).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def unanswering() -> Iterator[Unanswering]:
    store = Unanswering()
    yield store
    store.close()


@pytest.fixture
def failing() -> Iterator[Failing]:
    store = Failing()
    yield store
    store.close()


def assert_unavailable(ask: Callable[[], object], url: str, failure: str) -> None:
    """``ask`` raises StoreUnavailable naming the store and the failure, within OUTAGE_BOUND_S."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        ask()
    took = time.monotonic() - started
    assert took < OUTAGE_BOUND_S, f"an outage held the call for {took:.0f} s"
    assert url in caught.value.message
    assert failure in caught.value.message


def every_question(repository: MirroredRepository) -> list[Callable[[], object]]:
    """Each way the server asks the repository whether a model exists; ``contains`` last, for its
    answer is kept."""
    return [repository.check, repository.names, lambda: repository.source("m"), lambda: repository.contains("m")]


def test_a_stopped_store_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with running_s3(tmp_path / "moto.log") as own:
        boto3.client("s3", endpoint_url=own, **_boto_credentials()).create_bucket(Bucket=BUCKET)
        configure_s3(monkeypatch, own, connect_timeout=1, read_timeout=1)
        store = Store(own)
        store.put_model("m", tmp_path)
        clock = Clock(1000.0)
        repository = MirroredRepository(store.url, tmp_path / "cache", clock=clock)
        repository.check()
        assert repository.source("m").files[1].is_file()
    clock.now += ANSWER_TTL_S

    for ask in every_question(repository):
        assert_unavailable(ask, store.url, "Could not connect")


def test_an_endpoint_on_a_closed_port_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    configure_s3(monkeypatch, url, connect_timeout=1, read_timeout=1)
    repository = MirroredRepository(f"s3://{BUCKET}/repo", tmp_path / "cache")
    for ask in every_question(repository):
        assert_unavailable(ask, f"s3://{BUCKET}/repo", "Could not connect")


def test_a_store_that_never_answers_times_out_and_the_outage_is_remembered(
    unanswering: Unanswering, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    configure_s3(monkeypatch, unanswering.url, connect_timeout=1, read_timeout=1)
    repository = MirroredRepository(f"s3://{BUCKET}/repo", tmp_path / "cache")
    assert_unavailable(lambda: repository.contains("m"), f"s3://{BUCKET}/repo", "timeout")
    assert len(unanswering.connections) == 3, "three attempts by default (botocore's); s3fs repeats none of them"

    attempts = len(unanswering.connections)
    assert_unavailable(lambda: repository.contains("other"), f"s3://{BUCKET}/repo", "timeout")
    assert len(unanswering.connections) == attempts, "an outage seen a moment ago is not asked about again"


def test_a_store_answering_5xx_is_unavailable_after_a_bounded_number_of_attempts(
    failing: Failing, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    configure_s3(monkeypatch, failing.url, connect_timeout=1, read_timeout=1)
    repository = MirroredRepository(f"s3://{BUCKET}/repo", tmp_path / "cache")
    assert_unavailable(lambda: repository.contains("m"), f"s3://{BUCKET}/repo", Failing.MESSAGE)
    assert failing.requests == 3

    configure_s3(monkeypatch, failing.url, connect_timeout=1, read_timeout=1, retries={"total_max_attempts": 1})
    failing.requests = 0
    repository = MirroredRepository(f"s3://{BUCKET}/repo", tmp_path / "cache")
    assert_unavailable(lambda: repository.contains("m"), f"s3://{BUCKET}/repo", Failing.MESSAGE)
    assert failing.requests == 1, "the operator's retry setting (FSSPEC_S3 config_kwargs) reaches the client"
