"""S3 calls of the replicator: one client per region, each call retried by tenacity, and reads that resume.

botocore's own retries are off (one attempt per call) so that tenacity's policy is the only one:
exponential backoff with jitter on 5xx answers, throttling (503 SlowDown), connection resets and
timeouts, up to ``request_attempts`` tries. Every retry is reported with its reason, for the job's
counters and the metrics. boto3 does not retry a streaming GET that is cut in the middle of its body;
``read`` owns that, asking again with a Range header from the first byte it lacks.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from urllib3.exceptions import HTTPError as Urllib3Error

from modelserve.regions.config import Region, Replication

T = TypeVar("T")
# Reads of a body take this much at a time: a read cut short loses the chunk it was in (urllib3 raises
# rather than return part of it), so a resumed read asks again from the end of the last whole chunk.
# Smaller chunks lose less to a cut and cost more CPU per MiB (each read crosses botocore and urllib3).
CHUNK = 1024 * 1024
# Error codes S3 answers when it wants the caller to slow down or try again.
_THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"})
_TRANSIENT = frozenset({"InternalError", "ServiceUnavailable", "RequestTimeout", "BadDigest", "InvalidDigest"})


class CutDownload(Exception):
    """A GET's body ended before the bytes it announced: a connection cut mid-body."""


class Corrupt(Exception):
    """Bytes read or written differ from what they should be (a checksum or ETag mismatch)."""


def retry_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth another try (a label for metrics), or None when it is not."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _THROTTLED or status == 429 or (status == 503 and code in ("", "SlowDown", "503")):
            return "throttled"
        if code in ("BadDigest", "InvalidDigest"):
            return "corrupt"
        if status >= 500 or code in _TRANSIENT:
            return "server_error"
        return None
    if isinstance(exc, CutDownload | IncompleteReadError | ResponseStreamingError):
        return "cut_download"
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ConnectionError | Urllib3Error):
        return "connection"
    if isinstance(exc, Corrupt):
        return "corrupt"
    return None


def error_text(exc: BaseException) -> str:
    """One line for an operator: the S3 error code and message, or the exception."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code", "Error"))
        if code.isdigit():  # an answer without a body (HEAD): the status is all there is
            return f"HTTP {status}: {error.get('Message', '')}".strip()
        return f"{code} ({status}): {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def is_missing(exc: BaseException) -> bool:
    """Whether ``exc`` says the object (or upload) is not there."""
    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound", "NoSuchUpload")


class Store:
    """One region's bucket through a client whose every call is retried by the replication policy."""

    def __init__(
        self, region: Region, policy: Replication, client: Any, on_retry: Callable[[str], None] | None = None
    ) -> None:
        self.region = region
        self.bucket = region.store.bucket
        self.policy = policy
        self.on_retry = on_retry
        self.client = client  # boto3 clients are thread-safe; one per region serves every job

    def key(self, *parts: str) -> str:
        """An object key below the region's repository root."""
        return self.region.store.key(*parts)

    def call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)``, tried again with backoff while it fails for a reason worth it.

        The waits are "full jitter" (AWS's advice for throttling): random up to initial x 2^n, capped.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.request_attempts),
            wait=wait_random_exponential(multiplier=self.policy.backoff_initial_s, max=self.policy.backoff_max_s),
            retry=retry_if_exception(lambda exc: retry_reason(exc) is not None),
            before_sleep=self._retrying,
            reraise=True,
        )
        return retrying(function, *args, **kwargs)

    def _retrying(self, state: RetryCallState) -> None:
        if self.on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            self.on_retry((retry_reason(exc) if exc is not None else None) or "other")

    def read(self, key: str, size: int) -> bytearray:
        """The whole object ``key`` of ``size`` bytes; a body cut short is asked for again from where it broke."""
        with self.download(key, size) as download:
            return download.take(size)

    def download(self, key: str, size: int) -> Download:
        """One streaming GET of the object ``key`` of ``size`` bytes, read in pieces with ``take``."""
        return Download(self, key, size)

    def read_small(self, key: str) -> tuple[bytes, str]:
        """A whole small object (a manifest) and its ETag, checked against the ETag where that is its MD5."""

        def once() -> tuple[bytes, str]:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            body = answer["Body"]
            try:
                data = body.read()
            except (IncompleteReadError, ResponseStreamingError, Urllib3Error) as exc:
                raise CutDownload(f"{key}: {exc}") from exc
            finally:
                body.close()
            etag = str(answer.get("ETag", "")).strip('"')
            if is_md5(etag) and hashlib.md5(data, usedforsecurity=False).hexdigest() != etag:
                raise Corrupt(f"{key}: the bytes read differ from the object's ETag")
            return data, etag

        return self.call(once)

    def head(self, key: str, part: int | None = None) -> dict[str, Any] | None:
        """The object's metadata (with ``part``, its length is that part's), or None when there is no such object."""
        numbered = {"PartNumber": part} if part else {}
        try:
            answer: dict[str, Any] = self.call(self.client.head_object, Bucket=self.bucket, Key=key, **numbered)
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        return answer

    def put(
        self,
        key: str,
        data: bytes | bytearray,
        *,
        md5: str | None = None,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str:
        """Write a whole object with its Content-MD5; returns the ETag, checked against the MD5 we sent.

        ``md5`` (hex) is the bytes' MD5 where a source vouches for it, not computed again.
        ``if_match`` (an ETag) or ``if_absent`` make the write conditional (S3's If-Match / If-None-Match):
        a PreconditionFailed ClientError says another writer got there first. A conditional write that
        stored corrupt bytes is tried again on the condition that the object is still that copy of ours.
        """
        digest = bytes.fromhex(md5) if md5 else hashlib.md5(data, usedforsecurity=False).digest()
        condition = {"IfMatch": f'"{if_match}"'} if if_match else {"IfNoneMatch": "*"} if if_absent else {}

        def once() -> str:
            answer = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentMD5=base64_of(digest), **condition
            )
            etag = str(answer.get("ETag", "")).strip('"')
            if is_md5(etag) and etag != digest.hex():
                if condition:
                    condition.clear()
                    condition["IfMatch"] = f'"{etag}"'
                raise Corrupt(f"{key}: the store received other bytes than were sent (ETag {etag})")
            return etag

        return self.call(once)


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a conditional write losing to another writer."""
    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class Download:
    """A streaming GET read piece by piece. A body cut short (a reset, a read timeout, a connection
    closed early) is closed and asked for again, after the policy's backoff, with a Range header from
    the first byte not yet read: boto3 retries the request, never a body already streaming.

    The first GET asks for the whole object, without a Range: a store answers a range with a slice of
    the object, a copy of every byte on its side. Bytes past ``size`` (an object rewritten since it was
    listed) are never read: the connection is closed instead, and the hash of what was read tells."""

    def __init__(self, store: Store, key: str, size: int) -> None:
        self.store = store
        self.key = key
        self.offset = 0
        self.end = size
        self.body: Any = None
        self.answer: dict[str, Any] = {}  # the first GET's answer, less its body

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Let the connection go."""
        if self.body is not None:
            self.body.close()
            self.body = None

    def take(self, length: int) -> bytearray:
        """The next ``length`` bytes (fewer only at the end of the object), read into one buffer: a part
        of a large file is hashed and sent from it without another copy."""
        buffer = bytearray(min(length, self.end - self.offset))
        view = memoryview(buffer)
        filled = 0

        def once() -> None:
            nonlocal filled
            if self.body is None:
                ranged = {"Range": f"bytes={self.offset}-{self.end - 1}"} if self.offset else {}
                answer = self.store.client.get_object(Bucket=self.store.bucket, Key=self.key, **ranged)
                self.body = answer.pop("Body")
                self.answer = self.answer or answer
            try:
                while filled < len(buffer):
                    count = self.body.readinto(view[filled : filled + CHUNK])
                    if not count:
                        raise CutDownload(f"{self.key}: body ended at byte {self.offset} of {self.end}")
                    filled += count
                    self.offset += count
            except BaseException:
                self.close()
                raise

        if buffer:
            try:
                self.store.call(once)
            finally:
                view.release()
        return buffer

    @property
    def etag(self) -> str:
        """The object's ETag, as its first GET answered it."""
        return str(self.answer.get("ETag", "")).strip('"')

    def vouches(self) -> bool:
        """Whether the object's ETag is the MD5 of its bytes: one PUT, not under KMS or customer keys."""
        return is_md5(self.etag) and vouches(self.answer)


def vouches(answer: dict[str, Any]) -> bool:
    """Whether a GET's or HEAD's answer leaves the ETag as S3 computes it from the bytes: not under a
    KMS key or a customer's key, whose objects' ETags are not their MD5."""
    return not str(answer.get("ServerSideEncryption", "")).startswith("aws:kms") and not answer.get(
        "SSECustomerAlgorithm"
    )


def is_md5(etag: str) -> bool:
    """Whether an ETag can be an object's MD5 (single-part, not SSE-KMS): 32 hex digits."""
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag)


def base64_of(raw: bytes) -> str:
    """``raw`` in base64, as Content-MD5 takes a digest."""
    return base64.b64encode(raw).decode()


def make_client(region: Region, policy: Replication, pool: int = 32) -> Any:
    """A boto3 S3 client for ``region``'s store, with retries left to tenacity and our own checksums."""
    store = region.store
    options: dict[str, Any] = {}
    if store.credentials.given:
        keys = store.credentials.resolve(region.name)
        options = {
            "aws_access_key_id": keys.access_key_id.get_secret_value(),
            "aws_secret_access_key": keys.secret_access_key.get_secret_value(),
            "aws_session_token": keys.session_token.get_secret_value() if keys.session_token else None,
        }
    config = Config(
        connect_timeout=policy.connect_timeout_s,
        read_timeout=policy.read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=pool,
        # We send Content-MD5 and compare ETags and sha256 ourselves; botocore's CRC32 would hash every byte again.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # Content-MD5 and the ETag check cover each body; a signed payload (botocore's default over plain
        # HTTP, as to an in-cluster store) would hash every byte once more for nothing.
        s3={"payload_signing_enabled": False, **({"addressing_style": "path"} if store.endpoint_url else {})},
    )
    # One session for every client: building a client loads S3's service model, about 0.2 s a session,
    # and a session keeps what it loaded. Sessions are not thread-safe: clients are built under a lock.
    with _SESSION_LOCK:
        return _session().client(
            "s3",
            endpoint_url=store.endpoint_url,
            region_name=store.region_name or _aws_region(region.name),
            config=config,
            **options,
        )


_SESSION_LOCK = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


def _aws_region(name: str) -> str:
    # A region named like AWS's (eu-west-1) is its bucket's region; anything else signs as us-east-1.
    parts = name.split("-")
    return name if len(parts) == 3 and parts[-1].isdigit() else "us-east-1"
