"""Model repositories on object storage (``s3://bucket/models``, or any fsspec URL), served from a local
mirror in MODEL_CACHE_DIR.

Each model folder is mirrored when it is loaded, so a model added to the bucket at runtime can be
loaded without a restart, and a version removed from the bucket disappears from the mirror. Every
file is hashed (sha256) as it arrives and recorded in the mirror's manifest; before loading, the
local copies are hashed again and re-fetched if they no longer match, so a corrupted cache never
loads. Where a model folder carries a ``SHA256SUMS`` file (``sha256sum``'s format), it must list
every other file of the folder, and each must match it: a copy that differs from what was
published, or a file added without being published, never loads. A version folder of which it lists
no file at all is a version still being published (or replicated), and is left out until it is.

A model may also be a single file at the repository's root (``s3://bucket/models/resnet50-fp16.trt``),
as for a local repository (repository/layout.py): it is mirrored as version 1 of a folder of its name.

Object stores take any characters in a key, ``..`` and ``//`` included, and s3fs lists keys as
stored; a key whose copy would land anywhere but inside its model's folder is refused before
anything is written.

Credentials and endpoints come from the store's own configuration: AWS variables for S3, and
fsspec's ``FSSPEC_S3_ENDPOINT_URL``-style variables for S3-compatible stores such as MinIO. A store
that does not answer raises StoreUnavailable (a 503) within the client's timeouts and retries.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec

from modelserve.errors import ModelLoadError, ModelNotFound, StoreUnavailable
from modelserve.repository.layout import (
    LOOSE_SUFFIXES,
    VALID_NAME,
    ModelRepository,
    ModelSource,
    loose_model,
    read_source,
)

MANIFEST = ".modelserve-manifest.json"
CHECKSUMS = "SHA256SUMS"
ANSWER_TTL_S = 5.0  # how long ``contains`` trusts an answer (or an outage) of the store
_ANSWERS_KEPT = 10_000  # names remembered at most, so unknown names sent by clients cannot grow memory
_CHUNK = 1024 * 1024

S3_PROTOCOLS = ("s3", "s3a")
# botocore client settings for S3, under whatever the operator configured through fsspec
# (FSSPEC_S3='{"config_kwargs": {...}}' or FSSPEC_S3_CONFIG_KWARGS), which wins key by key. Three
# attempts of 10 s at most: a store that does not answer fails a lookup in about half a minute,
# one that refuses connections or answers 5xx in a few seconds.
S3_CLIENT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 10,
    "retries": {"mode": "standard", "total_max_attempts": 3},
}


def open_repository(location: str, cache_dir: Path) -> ModelRepository:
    """A repository at a local path, or at a URL mirrored into ``cache_dir``."""
    if "://" in location:
        return MirroredRepository(location, cache_dir)
    return ModelRepository(Path(location))


class MirroredRepository(ModelRepository):
    """A remote repository whose model folders are copied, verified, into a local mirror."""

    def __init__(self, url: str, cache_dir: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url.rstrip("/")
        protocol, _ = fsspec.core.split_protocol(self.url)
        options = _client_options(protocol)
        try:
            # Copies go through fsspec's shared instance, whose retries (s3fs's own, on top of
            # botocore's) also take up a read cut short in the middle of a large file.
            self.copying_fs = fsspec.core.url_to_fs(self.url, **options)[0]
            # Lookups go through one of our own, so that the retry count set below changes no other.
            self.fs, self.base = fsspec.core.url_to_fs(self.url, skip_instance_cache=True, **options)
        except (ImportError, ValueError) as exc:
            raise ModelLoadError(f"cannot open model repository {self.url}: {exc}") from exc
        if protocol in S3_PROTOCOLS:
            # s3fs repeats a timed-out call five times, each with all of botocore's attempts: a lookup
            # of an endpoint that does not answer took seven minutes. Botocore's attempts are enough.
            self.fs.retries = 1
        self.store_errors = _store_errors()
        # One mirror per URL, so two repositories never share (or clobber) a cache folder.
        super().__init__(cache_dir / hashlib.sha256(self.url.encode()).hexdigest()[:16])
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, tuple[float, bool]] = OrderedDict()  # name -> (until, found)
        self._outage: tuple[float, str] | None = None  # (until, message) of the last failed lookup

    @property
    def location(self) -> str:
        """The repository's URL."""
        return self.url

    def check(self) -> None:
        with self.asking("opening the repository"):
            found = self.fs.isdir(self.base)
        if not found:
            raise ModelLoadError(f"model repository {self.url} does not exist or is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)

    def names(self) -> list[str]:
        with self.asking("listing its models"):
            self.fs.invalidate_cache()  # object-store listings are cached; a model added since must show
            try:
                entries = self.fs.ls(self.base, detail=True)
            except FileNotFoundError:  # an object store has no empty folders: no model left
                return []
        found = set()
        for entry in entries:
            name = PurePosixPath(entry["name"]).name
            if entry["type"] == "directory":
                if VALID_NAME.match(name):
                    found.add(name)
            elif (model := loose_model(name)) is not None:
                found.add(model[0])
        return sorted(found)

    def contains(self, name: str) -> bool:
        """Whether the store holds a model folder ``name``.

        May block for a round trip to the store, up to its client's timeouts and retries (about half
        a minute for S3 that does not answer): call it from a worker thread. Answers, and the store's
        failure to give one, are kept for ANSWER_TTL_S seconds, so the requests that keep naming a
        model that is not loaded, or not there, cost one round trip per period instead of one each;
        a model uploaded meanwhile is seen within that time, and ``source`` always asks afresh.
        Raises StoreUnavailable while the store cannot be read.
        """
        if not VALID_NAME.match(name):
            return False
        now = self._clock()
        with self._lock:
            if self._outage is not None and now < self._outage[0]:
                raise StoreUnavailable(self._outage[1])
            known = self._answers.get(name)
        if known is not None and now < known[0]:
            return known[1]
        return self._look_up(name)

    def _look_up(self, name: str) -> bool:
        path = f"{self.base}/{name}"
        try:
            with self.asking(f"looking for model '{name}'"):
                self.fs.invalidate_cache(path)  # s3fs keeps listings until told: the answer must be fresh
                found = bool(self.fs.isdir(path)) or self._loose_key(name) is not None
        except StoreUnavailable as exc:
            with self._lock:
                self._outage = (self._clock() + ANSWER_TTL_S, exc.message)
            raise
        now = self._clock()
        with self._lock:
            self._outage = None
            self._answers[name] = (now + ANSWER_TTL_S, found)
            self._answers.move_to_end(name)
            # Entries go in oldest first, so the expired ones and the surplus are all at the front.
            while self._answers and (
                len(self._answers) > _ANSWERS_KEPT or next(iter(self._answers.values()))[0] <= now
            ):
                self._answers.popitem(last=False)
        return found

    def source(self, name: str) -> ModelSource:
        if not VALID_NAME.match(name) or not self._look_up(name):
            raise ModelNotFound.unknown(name, detail=f"it is not in the model repository {self.url}")
        with self.asking(f"looking for model '{name}'"):
            folder = bool(self.fs.isdir(f"{self.base}/{name}"))
        if folder or (key := self._loose_key(name)) is None:
            self.mirror(name)
        else:
            self._mirror_file(name, key)
        return read_source(name, self.root / name)

    def _loose_key(self, name: str) -> str | None:
        """The key of the file at the repository's root that is model ``name``, if any."""
        for suffix in LOOSE_SUFFIXES:
            key = f"{self.base}/{name}{suffix}"
            with self.asking(f"looking for model '{name}'"):
                if self.fs.isfile(key):
                    return key
        return None

    def _mirror_file(self, name: str, key: str) -> None:
        """A model that is one file in the store, mirrored as version 1 of a folder of its name (so the
        mirror reads as any other), fetched again only when the store's copy changed."""
        platform = LOOSE_SUFFIXES[PurePosixPath(key).suffix.lower()]
        local_dir = self.root / name
        relative = f"1/{platform.filenames[0]}"
        with self.asking(f"reading {key}"):
            stamp = _stamp(self.fs.info(key))
        manifest = _read_manifest(local_dir)
        known = manifest.get(relative)
        target = local_dir / relative
        if not (known and known["stamp"] == stamp and target.is_file() and _sha256(target) == known["sha256"]):
            local_dir.mkdir(parents=True, exist_ok=True)
            manifest = {relative: {"sha256": self._fetch(key, target), "stamp": stamp}}
            for other in local_dir.rglob("*"):  # whatever an earlier mirror of a folder of that name left
                if other.is_file() and other != target and other.name != MANIFEST:
                    other.unlink()
            _remove_empty_folders(local_dir)
            _write_manifest(local_dir, manifest)

    def mirror(self, name: str) -> Path:
        """Bring the local copy of one model folder up to date with the store, verifying every file.

        Every key is checked, and every file is checked against SHA256SUMS' list, before anything is
        written, so a refused model leaves the mirror as it was.
        """
        remote_dir = f"{self.base}/{name}"
        local_dir = self.root / name
        with self.asking(f"listing model '{name}'"):
            listing = self.fs.find(remote_dir, detail=True)
        remote: dict[str, tuple[str, dict[str, Any]]] = {}  # relative path -> (key, listing entry)
        for key, info in listing.items():
            relative = key.removeprefix(f"{remote_dir}/")
            if key.endswith("/") and not info.get("size"):
                continue  # an empty `folder/` object, as consoles create: a folder, not a file
            refusal = _refusal(relative, local_dir) if key.startswith(f"{remote_dir}/") else "it is outside the folder"
            if refusal is not None:
                raise ModelLoadError(
                    f"{self.url}/{name}: refused the object '{key}': {refusal}; rename or remove it in the store"
                )
            remote[relative] = (key, info)
        published = self._checksums(remote[CHECKSUMS][0]) if CHECKSUMS in remote else None
        if published is not None:
            # A version folder of which SHA256SUMS lists no file is still being published (replication
            # writes SHA256SUMS last): it stays out of the mirror until then, and the model's published
            # versions keep loading. A file added to a published version, or beside them, is refused.
            listed = {path.split("/", 1)[0] for path in published}
            remote = {r: entry for r, entry in remote.items() if not _unpublished_version(r, listed)}
            unlisted = sorted(relative for relative in remote if relative != CHECKSUMS and relative not in published)
            if unlisted:
                raise ModelLoadError(
                    f"{self.url}/{name}: {', '.join(unlisted)} {'is' if len(unlisted) == 1 else 'are'} not in "
                    f"{CHECKSUMS}; a model that publishes {CHECKSUMS} must list every other file of its folder"
                )
        local_dir.mkdir(parents=True, exist_ok=True)
        manifest = {k: v for k, v in _read_manifest(local_dir).items() if _refusal(k, local_dir) is None}
        for relative, (key, info) in sorted(remote.items()):
            if relative == CHECKSUMS:
                continue
            stamp = _stamp(info)
            target = local_dir / relative
            known = manifest.get(relative)
            if known and known["stamp"] == stamp and target.is_file() and _sha256(target) == known["sha256"]:
                digest = known["sha256"]
            else:
                digest = self._fetch(key, target)
                manifest[relative] = {"sha256": digest, "stamp": stamp}
            expected = (published or {}).get(relative)
            if expected is not None and expected != digest:
                target.unlink(missing_ok=True)
                manifest.pop(relative, None)
                _write_manifest(local_dir, manifest)
                raise ModelLoadError(
                    f"{self.url}/{name}/{relative}: sha256 {digest} differs from {CHECKSUMS} ({expected}); "
                    "the file is corrupt or was changed after publishing"
                )
        for relative in set(manifest) - set(remote):
            (local_dir / relative).unlink(missing_ok=True)
            del manifest[relative]
        _remove_empty_folders(local_dir)
        _write_manifest(local_dir, manifest)
        return local_dir

    def _fetch(self, key: str, target: Path) -> str:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as sink:
                for chunk in self._read(key):
                    digest.update(chunk)
                    sink.write(chunk)
            os.replace(partial, target)
        except OSError as exc:  # the store's errors arrive as StoreUnavailable: this is the cache's disk
            raise ModelLoadError(f"{self.url}: cannot write {target}: {exc}") from exc
        finally:
            partial.unlink(missing_ok=True)  # a copy cut short; nothing once it took the target's place
        return digest.hexdigest()

    def _read(self, key: str) -> Iterator[bytes]:
        with self.asking(f"copying {key}"), self.copying_fs.open(key, "rb") as source:
            while chunk := source.read(_CHUNK):
                yield chunk

    def _checksums(self, key: str) -> dict[str, str]:
        with self.asking(f"reading {key}"):
            return parse_checksums(self.fs.cat_file(key).decode(errors="replace"))


def parse_checksums(text: str) -> dict[str, str]:
    """A SHA256SUMS file (``sha256sum``'s format) as path -> sha256; the replicator reads and writes the same."""
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, path = line.strip().partition(" ")
            sums[path.lstrip(" *").removeprefix("./")] = digest.lower()
    return sums


def format_checksums(sums: dict[str, str]) -> str:
    """``sums`` as ``sha256sum`` writes them, sorted by path, so ``sha256sum -c`` checks a copy."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(sums.items()))


def _client_options(protocol: str) -> dict[str, Any]:
    """Our defaults for the store's client, each one only where the operator's fsspec configuration
    sets none (fsspec would otherwise let any argument we pass replace the operator's whole setting)."""
    if protocol not in S3_PROTOCOLS:
        return {}
    configured: dict[str, Any] = {}
    for name in S3_PROTOCOLS:
        given = fsspec.config.conf.get(name, {}).get("config_kwargs")
        if isinstance(given, dict):
            configured.update(given)
    return {"config_kwargs": {**S3_CLIENT_DEFAULTS, **configured}}


def _store_errors() -> tuple[type[Exception], ...]:
    """What a store's client raises when the store, not the request, is at fault: OSError from fsspec
    and the file systems behind it, and botocore's own errors, which s3fs passes on for connections
    refused or timed out and for answers it cannot translate."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no S3 support installed
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


def _refusal(relative: str, local_dir: Path) -> str | None:
    """Why a file at ``relative`` (a key's path below its model folder) cannot be mirrored, if it cannot."""
    parts = relative.split("/")
    if "" in parts:
        return "an empty path component (an absolute path, or '//') has no place in the model's folder"
    if "." in parts or ".." in parts:
        return "'.' and '..' would place its copy elsewhere than its path in the model's folder says"
    if not (local_dir / relative).resolve().is_relative_to(local_dir.resolve()):
        return f"its copy would resolve outside the model's folder {local_dir}"
    return None


def _unpublished_version(relative: str, listed: set[str]) -> bool:
    folder, slash, _ = relative.partition("/")
    return bool(slash) and folder.isdigit() and folder not in listed


def _stamp(info: dict[str, Any]) -> str:
    # What changes when the remote file changes: the ETag on object stores, else size and mtime.
    for key in ("ETag", "etag", "md5Hash"):
        if info.get(key):
            return str(info[key])
    return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('created')}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(local_dir: Path) -> dict[str, dict[str, str]]:
    try:
        manifest: dict[str, dict[str, str]] = json.loads((local_dir / MANIFEST).read_text())
        return manifest
    except (OSError, ValueError):
        return {}


def _write_manifest(local_dir: Path, manifest: dict[str, dict[str, str]]) -> None:
    partial = local_dir / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(partial, local_dir / MANIFEST)


def _remove_empty_folders(root: Path) -> None:
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
