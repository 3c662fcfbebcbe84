"""Replication jobs, planned from the source's SHA256SUMS and run to a published, verified copy.

A model version is the files its source's SHA256SUMS lists below ``<model>/<version>/``. A job copies
them into the target region's store (the same keys below its own prefix), each verified as it is
copied (copier.py); once all are, it removes whatever else lies in that version folder, copies the
model's config.yaml, and writes the target's SHA256SUMS last: the old entries with this version's
added. A server reading the target (repository/remote.py) leaves a version folder its SHA256SUMS
does not name out of its mirror, so it never sees half a version, and checks each file it mirrors
against the same entries.

An attempt that fails for a passing reason (throttling, 5xx, resets, timeouts, cut reads, corrupt
copies) leaves the job pending, to run again after a backoff that doubles; after ``max_attempts``, or
at once for an error no retry mends (access denied, a missing bucket or file), the job is dead, its
last error kept for ``--list-pending``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from modelserve.regions.config import Region, RegionsFile
from modelserve.regions.copier import Copier, FileCopy, Mismatch
from modelserve.regions.jobs import JobStore, progress_of
from modelserve.regions.outcomes import LeaseLost, ReplicationError, Tally, describe, failure_reason
from modelserve.regions.s3 import Corrupt, Store, is_conflict, is_missing, make_client, retry_reason
from modelserve.regions.schema import ReplicationJob, State
from modelserve.repository.remote import CHECKSUMS, format_checksums, parse_checksums

log = logging.getLogger("modelserve.regions")
CONFIG = "config.yaml"
PROGRESS_EVERY_S = 1.0
PUBLISH_TRIES = 5  # a copy's part-by-part progress is written at most this often


class Replicator:
    """Plans and runs replication jobs between the regions of one regions file."""

    def __init__(
        self,
        regions: RegionsFile,
        jobs: JobStore,
        *,
        owner: str,
        clock: Callable[[], float] = time.time,
        on_retry: Callable[[str, str], None] | None = None,
        on_failure: Callable[[str, str], None] | None = None,
        on_copied: Callable[[ReplicationJob, int], None] | None = None,
    ) -> None:
        self.regions = regions
        self.policy = regions.replication
        self.jobs = jobs
        self.owner = owner
        self.clock = clock
        self.on_retry = on_retry  # (target region, reason), each S3 call tried again
        self.on_failure = on_failure  # (target region, reason), each job attempt that failed
        self.on_copied = on_copied  # (job, bytes) as each file is written to the target
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def store(self, region: Region, on_retry: Callable[[str], None] | None = None) -> Store:
        """``region``'s store, on a client shared by every job (boto3 clients are thread-safe)."""
        with self._lock:
            if region.name not in self._clients:
                pool = self.policy.max_files + self.policy.max_parts + 4
                self._clients[region.name] = make_client(region, self.policy, pool)
        return Store(region, self.policy, self._clients[region.name], on_retry)

    # -- planning -----------------------------------------------------------------------------------

    def manifest(self, region: Region, model: str) -> dict[str, str]:
        """The model's SHA256SUMS in ``region``, as path -> sha256; empty when it has none."""
        return self.manifest_and_etag(region, model)[0]

    def manifest_and_etag(self, region: Region, model: str) -> tuple[dict[str, str], str | None]:
        """The model's SHA256SUMS in ``region`` and its ETag (None when there is none), to write it back
        on the condition that nobody else did meanwhile."""
        store = self.store(region)
        try:
            data, etag = store.read_small(store.key(model, CHECKSUMS))
        except ClientError as exc:
            if is_missing(exc):
                return {}, None
            raise
        return parse_checksums(data.decode(errors="replace")), etag

    def listing(self, region: Region, model: str, version: str) -> dict[str, tuple[int, float]]:
        """Files below ``<model>/<version>/`` in ``region``, as relative path -> (size, last modified)."""
        store = self.store(region)
        folder = store.key(model) + "/"
        found: dict[str, tuple[int, float]] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": store.bucket, "Prefix": f"{folder}{version}/"}
            if token:
                kwargs["ContinuationToken"] = token
            answer = store.call(store.client.list_objects_v2, **kwargs)
            for item in answer.get("Contents", []):
                found[str(item["Key"]).removeprefix(folder)] = (int(item["Size"]), item["LastModified"].timestamp())
            if not answer.get("IsTruncated"):
                return found
            token = answer.get("NextContinuationToken")

    def plan(
        self, model: str, version: str | None, source: str, targets: list[str], *, again: bool = False
    ) -> list[ReplicationJob]:
        """Jobs copying ``model`` (one version, or every version its source publishes) into ``targets``."""
        origin = self.regions.region(source)
        for target in targets:
            if target == source:
                raise ReplicationError(f"{target} is the source region; name other regions as targets")
            self.regions.region(target)
        sums = self.manifest(origin, model)
        if not sums:
            raise ReplicationError(
                f"{origin.store.url}/{model}/{CHECKSUMS} does not exist: publish the model in {source} with a "
                f"{CHECKSUMS} (sha256sum's format) listing every file of its folder"
            )
        versions = sorted({p.split("/", 1)[0] for p in sums if "/" in p}, key=_version_order)
        if version is not None:
            if version not in versions:
                raise ReplicationError(
                    f"{model}:{version} is not published in {source}: its {CHECKSUMS} names version(s) "
                    f"{', '.join(versions) or 'none'}"
                )
            versions = [version]
        planned = []
        for name in versions:
            files = self.listing(origin, model, name)
            listed = [p for p in sums if p.startswith(f"{name}/")]
            if missing := [p for p in listed if p not in files]:
                raise ReplicationError(f"{model}:{name} in {source}: {', '.join(missing)} listed but not stored")
            size = sum(files[p][0] for p in listed)
            published_at = max(files[p][1] for p in listed)
            for target in targets:
                planned.append(
                    self.jobs.enqueue(
                        model,
                        name,
                        source,
                        target,
                        published_at=min(published_at, self.clock()),
                        files_total=len(listed),
                        bytes_total=size,
                        now=self.clock(),
                        again=again,
                    )
                )
        return planned

    # -- running ------------------------------------------------------------------------------------

    def run_pending(self, limit: int = 1000, deadline: float | None = None, ids: Sequence[int] | None = None) -> int:
        """Run every job that is due (of ``ids``, when given), one after another, until none is or
        ``deadline`` passes; how many ran."""
        ran = 0
        while ran < limit and (deadline is None or time.monotonic() < deadline):
            claimed = self.jobs.claim(self.owner, self.clock(), self.policy.lease_s, 1, ids)
            if not claimed:
                return ran
            self.run(claimed[0])
            ran += 1
        return ran

    def run(self, job: ReplicationJob) -> None:
        """One attempt at a claimed job, ending with its state stored and its lease given back."""
        retries = Tally()
        target = self.regions.region(job.target_region)

        def retried(reason: str) -> None:
            retries.add(1)
            if self.on_retry is not None:
                self.on_retry(job.target_region, reason)

        try:
            self._save(job, state=State.COPYING, attempts=job.attempts + 1)
            source = self.store(self.regions.region(job.source_region), retried)
            destination = self.store(target, retried)
            self._attempt(job, source, destination)
        except LeaseLost:
            return
        except Exception as exc:
            self.jobs.count_retries(job.id, retries.take())
            self._failed(job, exc)
            return
        self.jobs.count_retries(job.id, retries.take())
        now = self.clock()
        log.info(
            "replicated %s:%s from %s to %s: %d file(s), %d bytes, attempt %d",
            job.model,
            job.version,
            job.source_region,
            job.target_region,
            job.files_total,
            job.bytes_total,
            job.attempts,
        )
        self.jobs.release(
            job,
            self.owner,
            now,
            state=State.REPLICATED,
            files_done=job.files_total,
            bytes_done=job.bytes_total,
            finished_at=now,
            last_error=None,
            last_reason=None,
        )

    def _attempt(self, job: ReplicationJob, source: Store, target: Store) -> None:
        sums = self.manifest(source.region, job.model)
        listed = {p: d for p, d in sums.items() if p.startswith(f"{job.version}/")}
        if not listed:
            raise ReplicationError(f"{job.model}:{job.version} is no longer published in {job.source_region}")
        sizes = self.listing(source.region, job.model, job.version)
        if missing := sorted(p for p in listed if p not in sizes):
            raise ReplicationError(f"{', '.join(missing)} listed in the source's {CHECKSUMS} but not stored")
        if target.head(target.key(job.model, CHECKSUMS)) is None:
            # Before the first file lands: an empty SHA256SUMS keeps servers from mirroring unverified files.
            try:
                target.put(target.key(job.model, CHECKSUMS), b"", if_absent=True)
            except ClientError as exc:
                if not is_conflict(exc):  # another replicator wrote one first: as good
                    raise
        files = [
            FileCopy(p, source.key(job.model, p), target.key(job.model, p), sizes[p][0], listed[p])
            for p in sorted(listed)
        ]
        self._copy_all(job, source, target, files)
        self._save(job, state=State.PUBLISHING)
        self._publish(job, source, target, sums, listed)

    def _copy_all(self, job: ReplicationJob, source: Store, target: Store, files: list[FileCopy]) -> None:
        policy = self.policy
        progress = progress_of(job)
        lock = threading.Lock()
        copier = Copier(
            source,
            target,
            part_size=policy.part_size,
            threshold=policy.multipart_threshold,
            max_parts=policy.max_parts,
        )
        done_bytes = sum(f.size for f in files if progress.get(f.relative, {}).get("done"))

        last_saved = [0.0]

        def save(relative: str, state: dict[str, Any], nbytes: int, mismatch: bool = False, copied: int = 0) -> None:
            nonlocal done_bytes
            with lock:
                progress[relative] = state
                done_bytes += nbytes if state.get("done") else 0
                # A part's record may wait a moment (a resumed copy finds its part in the store by its
                # MD5); a new upload, a file done or a mismatch is written at once.
                routine = "parts" in state and state["parts"] and not mismatch
                if routine and time.monotonic() - last_saved[0] < PROGRESS_EVERY_S:
                    return
                last_saved[0] = time.monotonic()
                changes: dict[str, Any] = {
                    "progress": dict(progress),
                    "files_done": sum(1 for f in files if progress.get(f.relative, {}).get("done")),
                    "bytes_done": done_bytes + _parts_bytes(progress, policy.part_size),
                }
                if mismatch:
                    changes["mismatches"] = job.mismatches + 1
                if copied:
                    changes["bytes_copied"] = job.bytes_copied + copied
                self._save(job, **changes)

        def copy(file: FileCopy) -> None:
            if progress.get(file.relative, {}).get("done") and self._still_there(target, file, progress):
                return
            for attempt in range(policy.request_attempts):
                try:
                    etag, written = copier.copy(
                        file,
                        progress.get(file.relative, {}),
                        lambda state, n: save(file.relative, state, 0),
                        # A copy that failed hashes what it sends the next time, in case the source's ETag
                        # was not the MD5 it looked like.
                        trust_source=attempt == 0,
                    )
                except (Mismatch, Corrupt):
                    save(file.relative, {}, 0, mismatch=True)
                    continue
                save(file.relative, {"done": True, "etag": etag}, file.size, copied=written)
                if self.on_copied is not None:
                    self.on_copied(job, written)
                return
            raise Corrupt(f"{file.relative}: every copy of {policy.request_attempts} failed verification")

        try:
            with ThreadPoolExecutor(policy.max_files, thread_name_prefix="replication-file") as files_pool:
                # Largest first: a large file started last would copy alone at the end, its parts the only work.
                by_size = sorted(files, key=lambda f: f.size, reverse=True)
                for future in [files_pool.submit(copy, f) for f in by_size]:
                    future.result()
        finally:
            copier.close()

    def _still_there(self, target: Store, file: FileCopy, progress: dict[str, Any]) -> bool:
        head = target.head(file.target_key)
        etag = progress[file.relative].get("etag")
        return head is not None and int(head.get("ContentLength", -1)) == file.size and _etag(head) == etag

    def _publish(
        self, job: ReplicationJob, source: Store, target: Store, sums: dict[str, str], listed: dict[str, str]
    ) -> None:
        stray = [p for p in self.listing(target.region, job.model, job.version) if p not in listed]
        for relative in stray:  # left by an older copy: a published version must hold nothing unlisted
            target.call(target.client.delete_object, Bucket=target.bucket, Key=target.key(job.model, relative))
        ours = dict(listed)
        published = self.manifest(target.region, job.model)
        if CONFIG in sums and published.get(CONFIG) == sums[CONFIG] and target.head(target.key(job.model, CONFIG)):
            ours[CONFIG] = sums[CONFIG]  # published there already, as it is: not written again
        elif CONFIG in sums:
            # Written before SHA256SUMS: a server mirroring the model in between refuses it (its config
            # differs from the entry) until SHA256SUMS follows, moments later; it never loads it unverified.
            data = source.read(source.key(job.model, CONFIG), _size(source, source.key(job.model, CONFIG)))
            if hashlib.sha256(data).hexdigest() != sums[CONFIG]:
                raise Corrupt(f"{job.model}/{CONFIG}: the bytes read hash otherwise than the source's {CHECKSUMS}")
            target.put(target.key(job.model, CONFIG), data)
            ours[CONFIG] = sums[CONFIG]
        # Read, merge, write on the condition that it is still what was read (If-Match): another replicator
        # publishing another version of the model at the same moment makes the write fail, and the merge
        # is made again on what it wrote, so neither loses the other's entries.
        for _ in range(PUBLISH_TRIES):
            current, etag = self.manifest_and_etag(target.region, job.model)
            merged = {p: d for p, d in current.items() if not p.startswith(f"{job.version}/")} | ours
            try:
                target.put(
                    target.key(job.model, CHECKSUMS),
                    format_checksums(merged).encode(),
                    if_match=etag,
                    if_absent=etag is None,
                )
                return
            except ClientError as exc:
                if not is_conflict(exc):
                    raise
        raise RuntimeError(f"{job.model}/{CHECKSUMS} in {job.target_region} changed under every one of our writes")

    def _failed(self, job: ReplicationJob, exc: BaseException) -> None:
        reason = failure_reason(exc)
        if self.on_failure is not None:
            self.on_failure(job.target_region, reason)
        now = self.clock()
        final = (retry_reason(exc) is None and reason != "mismatch") or job.attempts >= self.policy.max_attempts
        wait = self.policy.job_backoff_s * 2 ** (job.attempts - 1) * random.uniform(0.5, 1.0)
        what = f"{job.model}:{job.version} to {job.target_region}, attempt {job.attempts} ({reason})"
        if final:
            log.error("replication of %s failed for good, dead-lettered: %s", what, describe(exc))
        else:
            log.warning("replication of %s failed, next try in %.0f s: %s", what, wait, describe(exc))
        self.jobs.release(
            job,
            self.owner,
            now,
            state=State.DEAD if final else State.PENDING,
            next_attempt_at=now if final else now + wait,
            finished_at=now if final else None,
            last_error=f"attempt {job.attempts}: {describe(exc)}"[:4000],
            last_reason=reason,
        )

    def _save(self, job: ReplicationJob, **changes: Any) -> None:
        if not self.jobs.save(job, self.owner, self.clock(), self.policy.lease_s, **changes):
            raise LeaseLost(f"job {job.id} was taken over")


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (1 << 62, version)


def _parts_bytes(progress: dict[str, Any], part_size: int) -> int:
    # Parts uploaded of files under way count as done; a last part is counted as a full one.
    return sum(len(state.get("parts", {})) * part_size for state in progress.values() if not state.get("done"))


def _etag(head: dict[str, Any]) -> str:
    return str(head.get("ETag", "")).strip('"')


def _size(store: Store, key: str) -> int:
    head = store.head(key)
    if head is None:
        raise ReplicationError(f"{key} is listed in {CHECKSUMS} but not stored")
    return int(head["ContentLength"])
