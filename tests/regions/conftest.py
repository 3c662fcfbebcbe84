"""Regions for the replication tests: one moto S3 server per region on free ports, each behind a fault
proxy, a regions file naming them, and the jobs' database (SQLite, and PostgreSQL where a test asks)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.regions.faults import FaultProxy
from tests.s3 import running_s3

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
KEYS = {"access": "testing", "secret": "testing"}
# Small parts, so multipart copies (and their resumption) cost little; moto is told to accept them.
PART_MIN = 64 * 1024


@dataclass
class Endpoint:
    """One region's moto server, the proxy in front of it, and a client that bypasses the proxy."""

    name: str
    moto_url: str
    proxy: FaultProxy
    bucket: str

    @property
    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Endpoint]]:
    """A moto server per region for the whole session; tests take fresh buckets on them."""
    with ExitStack() as stack:
        found = {}
        folder = tmp_path_factory.mktemp("moto")
        with _environment(S3_UPLOAD_PART_MIN_SIZE=str(PART_MIN)):
            urls = {name: stack.enter_context(running_s3(folder / f"{name}.log")) for name in REGIONS}
        for name, url in urls.items():
            proxy = FaultProxy(url)
            stack.callback(proxy.close)
            found[name] = Endpoint(name, url, proxy, "")
        yield found


_buckets = iter(range(1, 1_000_000))


@pytest.fixture
def regions(endpoints: dict[str, Endpoint], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Endpoint]:
    """Fresh buckets in every region, no faults, and a regions file at REGIONS_FILE naming them."""
    number = next(_buckets)
    for endpoint in endpoints.values():
        endpoint.bucket = f"models-{endpoint.name}-{number}"
        endpoint.client.create_bucket(Bucket=endpoint.bucket)
        endpoint.proxy.rate = 0.0
        endpoint.proxy.scripted.clear()
        endpoint.proxy.injected.clear()
        endpoint.proxy.seen.clear()
        endpoint.proxy.sent.clear()
        endpoint.proxy.delay_s = 0.0
        endpoint.proxy.hooks.clear()
    monkeypatch.setenv("REGION_ACCESS_KEY", KEYS["access"])
    monkeypatch.setenv("REGION_SECRET_KEY", KEYS["secret"])
    write_regions_file(tmp_path / "regions.yaml", endpoints)
    monkeypatch.setenv("REGIONS_FILE", str(tmp_path / "regions.yaml"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    return endpoints


def write_regions_file(
    path: Path, endpoints: dict[str, Endpoint], *, servers: dict[str, list[str]] | None = None, **replication: Any
) -> Path:
    """A regions file whose stores are reached through each region's fault proxy; ``servers`` are the
    regions' serving endpoints (unreachable ones where not given)."""
    document = {
        "regions": [
            {
                "name": e.name,
                "priority": index + 1,
                "store": {
                    "endpoint_url": e.proxy.url,
                    "bucket": e.bucket,
                    "prefix": "models",
                    "credentials": {
                        "access_key_id_env": "REGION_ACCESS_KEY",
                        "secret_access_key_env": "REGION_SECRET_KEY",
                    },
                },
                "endpoints": (servers or {}).get(e.name, [f"http://{e.name}.invalid:8000"]),
            }
            for index, e in enumerate(endpoints.values())
        ],
        "replication": {
            "part_size_mb": PART_MIN / 1048576,
            "multipart_threshold_mb": 2 * PART_MIN / 1048576,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.1,
            "job_backoff_s": 0.05,
            "read_timeout_s": 5,
            "connect_timeout_s": 2,
            **replication,
        },
    }
    path.write_text(yaml.safe_dump(document))
    return path


def publish(
    endpoint: Endpoint,
    model: str,
    versions: dict[str, dict[str, bytes]],
    config: bytes | None = None,
    *,
    layout: str = "put",
    encryption: dict[str, str] | None = None,
) -> None:
    """Put ``model``'s versions (version -> file name -> bytes) and a SHA256SUMS listing them, straight into moto.

    ``layout`` "put" writes each file with one PUT; "cp" writes them as ``aws s3 cp`` does, in parts of
    the regions file's part size where they are past its threshold (boto3's managed upload would not
    take parts under 5 MiB): the layout whose ETags vouch for a copy's. ``encryption`` adds server-side
    encryption arguments (``ServerSideEncryption``, ``SSEKMSKeyId``) to the model's files.
    """
    client = endpoint.client
    sums: dict[str, str] = {}
    if config is not None:
        client.put_object(Bucket=endpoint.bucket, Key=f"models/{model}/config.yaml", Body=config)
        sums["config.yaml"] = hashlib.sha256(config).hexdigest()
    for version, files in versions.items():
        for name, data in files.items():
            key = f"models/{model}/{version}/{name}"
            if layout == "cp" and len(data) > 2 * PART_MIN:
                _upload_in_parts(client, endpoint.bucket, key, data, encryption or {})
            else:
                client.put_object(Bucket=endpoint.bucket, Key=key, Body=data, **(encryption or {}))
            sums[f"{version}/{name}"] = hashlib.sha256(data).hexdigest()
    text = "".join(f"{digest}  {path}\n" for path, digest in sorted(sums.items()))
    client.put_object(Bucket=endpoint.bucket, Key=f"models/{model}/SHA256SUMS", Body=text.encode())


def _upload_in_parts(client: Any, bucket: str, key: str, data: bytes, encryption: dict[str, str]) -> None:
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, **encryption)["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(data), PART_MIN), start=1):
        answer = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data[start : start + PART_MIN]
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})


def stored(endpoint: Endpoint, model: str) -> dict[str, bytes]:
    """Every object below ``model``'s folder in ``endpoint``, read straight from moto."""
    client = endpoint.client
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=endpoint.bucket, Prefix=f"models/{model}/"):
        for item in page.get("Contents", []):
            key = item["Key"]
            found[key.removeprefix(f"models/{model}/")] = client.get_object(Bucket=endpoint.bucket, Key=key)[
                "Body"
            ].read()
    return found
