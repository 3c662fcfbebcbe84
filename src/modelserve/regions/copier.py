"""Copying one file between two regions' stores, streamed, hashed while it passes, verified before it counts.

A file is read from the source in one streaming GET (asked for again from the first missing byte
where it is cut) and hashed with sha256 as it passes; a small file is written with one PUT, a large
one with a multipart upload whose parts go up on a shared pool while the next part is read.
Memory is bounded by ``max_parts`` part buffers, all files together.

Verification is a chain: the sha256 of the bytes read must equal the source's SHA256SUMS entry, and
the target's ETag (the MD5 of what it stored) must equal the MD5 of the bytes sent (Content-MD5 is sent
too, so real S3 refuses a corrupted body itself; each part also carries a CRC32, as boto3 sends). The
MD5 of the bytes sent is where the copy spends most of its CPU, so it is taken from the source where the
source vouches for it: an object written in the same layout as the copy (one PUT, or parts of the same
size, as ``aws s3 cp`` writes them) has the ETag the copy must get, when that ETag is an MD5 (not SSE-KMS
or SSE-C); rclone uses source ETags alike. Otherwise, or after a vouched copy failed, the copy hashes
what it sends. Where the target's ETag is not an MD5 (SSE-KMS, some S3-compatible stores) the written
object is read back and hashed instead. A file that fails is copied again; it is never reported verified.

The multipart upload in flight (its id and every completed part with its MD5) is handed to
``on_progress`` after each part, for the job to store: a copy that resumes skips the parts the store
holds with the MD5 of the bytes read again (the sha256 of the whole file needs every byte); a vouched
copy keeps the parts the store holds as recorded, as the completed object's ETag checks them all.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from modelserve.regions.s3 import Corrupt, Store, base64_of, is_md5, is_missing, vouches


class Mismatch(Exception):
    """A file's bytes differ from its source manifest entry; the copy is discarded."""


@dataclass(frozen=True)
class FileCopy:
    """One file of a model version: where it is read, where it goes, and what it must hash to."""

    relative: str  # path below the model's folder: "1/model.onnx", "config.yaml"
    source_key: str
    target_key: str
    size: int
    sha256: str


# What the job stores of a file under way: {"upload_id": str, "parts": {"<n>": md5_hex}}; {} when none.
Progress = dict[str, Any]


class Copier:
    """Copies files from ``source`` to ``target`` through one bounded pool of part reads and writes."""

    def __init__(self, source: Store, target: Store, *, part_size: int, threshold: int, max_parts: int) -> None:
        self.source = source
        self.target = target
        self.part_size = part_size
        self.threshold = threshold
        self.pool = ThreadPoolExecutor(max_parts, thread_name_prefix="replication-part")
        self.budget = threading.BoundedSemaphore(max_parts)  # part buffers alive at once

    def close(self) -> None:
        """Stop the pool once its work is done."""
        self.pool.shutdown(wait=True)

    def copy(
        self,
        file: FileCopy,
        progress: Progress,
        on_progress: Callable[[Progress, int], None],
        *,
        trust_source: bool = True,
    ) -> tuple[str, int]:
        """Copy ``file`` and verify it; returns the target's ETag and the bytes written.

        ``progress`` is what an earlier attempt stored (resumed from); ``on_progress(progress, nbytes)``
        is called after each part written. ``trust_source`` lets the source's ETag stand for the MD5 of
        the bytes sent where it can (off after a copy that relied on it failed). Raises Mismatch when the
        bytes read differ from the manifest, Corrupt when the target stored other bytes than were sent.
        """
        if file.size <= self.threshold:
            return self._copy_whole(file, on_progress, trust_source)
        return self._copy_parts(file, progress, on_progress, trust_source)

    def _copy_whole(
        self, file: FileCopy, on_progress: Callable[[Progress, int], None], trust_source: bool
    ) -> tuple[str, int]:
        with self.budget:
            with self.source.download(file.source_key, file.size) as download:
                data = download.take(file.size)
            if hashlib.sha256(data).hexdigest() != file.sha256:
                raise Mismatch(f"{file.source_key}: the bytes read hash otherwise than SHA256SUMS says")
            md5 = download.etag if trust_source and download.vouches() else None
            etag = self.target.put(file.target_key, data, md5=md5)
        if not is_md5(etag):
            self._read_back(file)
        on_progress({}, len(data))
        return etag, len(data)

    def _copy_parts(
        self, file: FileCopy, progress: Progress, on_progress: Callable[[Progress, int], None], trust_source: bool
    ) -> tuple[str, int]:
        count = -(-file.size // self.part_size)
        vouched = self._vouched_etag(file, count) if trust_source else None
        upload_id, done = self._resumable(file, progress, vouched is not None)
        if upload_id is None:
            # A CRC32 per part, as boto3 sends by default: the store checks each part against it, and the
            # object's checksum is built from the parts' (otherwise S3 computes a CRC64 over the whole object).
            answer = self.target.call(
                self.target.client.create_multipart_upload,
                Bucket=self.target.bucket,
                Key=file.target_key,
                ChecksumAlgorithm="CRC32",
            )
            upload_id, done = str(answer["UploadId"]), {}
            on_progress({"upload_id": upload_id, "parts": {}}, 0)
        state: Progress = {"upload_id": upload_id, "parts": dict(done)}
        lock = threading.Lock()
        digest = hashlib.sha256()
        uploads: list[Future[int]] = []

        def upload(number: int, data: bytearray, md5: str | None) -> int:
            try:
                answer = self.target.call(self._upload_part, file.target_key, upload_id, number, data, md5)
            finally:
                self.budget.release()
            with lock:
                state["parts"][str(number)] = answer
                snapshot = {"upload_id": upload_id, "parts": dict(state["parts"])}
            on_progress(snapshot, len(data))
            return len(data)

        # One streaming GET for the whole file (resumed with Range where it is cut), read part by part in
        # order for the sha256, while the parts already read go up on the pool.
        try:
            with self.source.download(file.source_key, file.size) as download:
                for number in range(1, count + 1):
                    # This thread holds no part buffer while it waits for one: every earlier part is
                    # with an upload, which frees its buffer by itself.
                    self.budget.acquire()
                    try:
                        data = download.take(self.part_size)
                    except BaseException:
                        self.budget.release()
                        raise
                    digest.update(data)
                    md5 = None if vouched else hashlib.md5(data, usedforsecurity=False).hexdigest()
                    if str(number) in done and (vouched or done[str(number)] == md5):
                        # Uploaded by an earlier attempt: the same bytes, by their MD5 or, vouched, by
                        # the completed object's ETag below.
                        self.budget.release()
                    else:
                        uploads.append(self.pool.submit(upload, number, data, md5))
                    del data
                    if failed := next((f for f in uploads if f.done() and f.exception() is not None), None):
                        failed.result()
            written = sum(f.result() for f in uploads)
        except BaseException:
            for upload_future in uploads:
                with suppress(Exception):  # the first failure is the one raised
                    upload_future.result()
            raise
        if digest.hexdigest() != file.sha256:
            self._abort(file.target_key, upload_id)
            on_progress({}, 0)
            raise Mismatch(f"{file.source_key}: the bytes read hash otherwise than SHA256SUMS says")
        parts = [{"PartNumber": n, "ETag": f'"{state["parts"][str(n)]}"'} for n in range(1, count + 1)]
        expected = vouched or (
            hashlib.md5(
                b"".join(bytes.fromhex(state["parts"][str(n)]) for n in range(1, count + 1)), usedforsecurity=False
            ).hexdigest()
            + f"-{count}"
        )
        etag = self._complete(file.target_key, upload_id, parts, expected)
        if not (etag.endswith(f"-{count}") and is_md5(etag.split("-")[0])):
            self._read_back(file)
        elif etag != expected:
            raise Corrupt(f"{file.target_key}: the stored object's ETag {etag} is not that of the parts sent")
        return etag, written

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytearray, md5: str | None) -> str:
        """Upload one part; returns its ETag. Without ``md5`` (a vouched copy) the part is checked by the
        store against its CRC32 and, with every other part, by the completed object's ETag."""
        answer = self.target.client.upload_part(
            Bucket=self.target.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumCRC32=base64_of(zlib.crc32(data).to_bytes(4, "big")),
            **({"ContentMD5": base64_of(bytes.fromhex(md5))} if md5 else {}),
        )
        etag = str(answer.get("ETag", "")).strip('"')
        if md5 is None:
            return etag
        if is_md5(etag) and etag != md5:
            raise Corrupt(f"{key}: part {number} arrived otherwise than sent (ETag {etag}, sent {md5})")
        return md5

    def _vouched_etag(self, file: FileCopy, count: int) -> str | None:
        """The source's ETag where it is the ETag a good copy in ``count`` parts of ``part_size`` gets:
        the source was written in parts of that size, and not with KMS or customer keys. The length of
        part 1 tells the part size (a HEAD with a part number; its ETag is not asked: stores differ)."""
        head = self.source.head(file.source_key)
        if head is None:
            return None  # the GET says so, in its own words
        etag = str(head.get("ETag", "")).strip('"')
        if etag != f"{etag[:32]}-{count}" or not is_md5(etag[:32]) or not vouches(head):
            return None
        first = self.source.head(file.source_key, part=1)
        return etag if first is not None and int(first.get("ContentLength", -1)) == self.part_size else None

    def _resumable(self, file: FileCopy, progress: Progress, vouched: bool) -> tuple[str | None, dict[str, str]]:
        """The upload an earlier attempt left, with its parts, if the store still has it."""
        upload_id = progress.get("upload_id")
        if not upload_id:
            return None, {}
        try:
            answer = self.target.call(
                self.target.client.list_parts, Bucket=self.target.bucket, Key=file.target_key, UploadId=upload_id
            )
        except ClientError as exc:
            if is_missing(exc):
                return None, {}
            raise
        stored = {str(p["PartNumber"]): str(p["ETag"]).strip('"') for p in answer.get("Parts", [])}
        # A part counts as done when the store holds it as recorded, or (parts uploaded after the last
        # record was written, not vouched for) when its ETag is an MD5: the copy compares it with the
        # bytes it reads again.
        recorded: dict[str, str] = progress.get("parts", {})
        done = {} if vouched else {n: etag for n, etag in stored.items() if is_md5(etag)}
        done.update({n: etag for n, etag in recorded.items() if stored.get(n) == etag})
        return str(upload_id), done

    def _complete(self, key: str, upload_id: str, parts: list[dict[str, Any]], expected: str) -> str:
        try:
            answer = self.target.call(
                self.target.client.complete_multipart_upload,
                Bucket=self.target.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except ClientError as exc:
            # A completion whose answer was lost, tried again: the upload is gone because it is the object now.
            head = self.target.head(key) if is_missing(exc) else None
            if head is not None and str(head.get("ETag", "")).strip('"') == expected:
                return expected
            raise
        return str(answer.get("ETag", "")).strip('"')

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.target.call(
                self.target.client.abort_multipart_upload, Bucket=self.target.bucket, Key=key, UploadId=upload_id
            )
        except ClientError as exc:
            if not is_missing(exc):
                raise

    def _read_back(self, file: FileCopy) -> None:
        """Hash the object as the target stores it, where its ETag cannot vouch for it."""
        if sha256_of(self.target, file.target_key, file.size, self.part_size) != file.sha256:
            raise Corrupt(f"{file.target_key}: the copy read back hashes otherwise than SHA256SUMS says")


def sha256_of(store: Store, key: str, size: int, part_size: int) -> str:
    """The sha256 of an object, read in parts (each resumed with Range when cut)."""
    digest = hashlib.sha256()
    with store.download(key, size) as download:
        while data := download.take(part_size):
            digest.update(data)
    return digest.hexdigest()
