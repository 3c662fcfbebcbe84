"""How a replication attempt ends, in an operator's words: the errors the planner raises, and the reason
label (for metrics and ``--list-pending``) and one-line message of whatever made an attempt fail."""

from __future__ import annotations

import threading

from botocore.exceptions import ClientError

from modelserve.regions.config import RegionsFileError
from modelserve.regions.copier import Mismatch
from modelserve.regions.s3 import Corrupt, error_text, retry_reason


class ReplicationError(Exception):
    """Replication cannot start as asked (unknown model or version, no SHA256SUMS); the message says what."""


class LeaseLost(Exception):
    """Another replicator took the job over (this one was too slow to renew its lease)."""


class Tally:
    """A count added to from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def add(self, n: int) -> None:
        with self._lock:
            self._count += n

    def take(self) -> int:
        with self._lock:
            count, self._count = self._count, 0
        return count


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, Mismatch | Corrupt):
        return "mismatch"
    if isinstance(exc, ReplicationError | RegionsFileError):
        return "invalid"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return "denied"
        if code in ("NoSuchBucket", "NoSuchKey", "404"):
            return "missing"
    return retry_reason(exc) or "other"


def describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ReplicationError | RegionsFileError | Mismatch | Corrupt) else error_text(exc)
