"""Model repositories on object storage (``s3://bucket/models``, or any fsspec URL), served from a local
mirror in MODEL_CACHE_DIR.

Each model folder is mirrored when it is loaded, so a model added to the bucket at runtime can be
loaded without a restart, and a version removed from the bucket disappears from the mirror. Every
file is hashed (sha256) as it arrives and recorded in the mirror's manifest; before loading, the
local copies are hashed again and re-fetched if they no longer match, so a corrupted cache never
loads. Where a model folder carries a ``SHA256SUMS`` file (``sha256sum``'s format), it must list
every other file of the folder, and each must match it: a copy that differs from what was
published, or a file added without being published, never loads.

Object stores take any characters in a key, ``..`` and ``//`` included, and s3fs lists keys as
stored; a key whose copy would land anywhere but inside its model's folder is refused before
anything is written.

Credentials and endpoints come from the store's own configuration: AWS variables for S3, and
fsspec's ``FSSPEC_S3_ENDPOINT_URL``-style variables for S3-compatible stores such as MinIO.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec

from modelserve.errors import ModelLoadError, ModelNotFound
from modelserve.repository.layout import VALID_NAME, ModelRepository, ModelSource

MANIFEST = ".modelserve-manifest.json"
CHECKSUMS = "SHA256SUMS"
_CHUNK = 1024 * 1024


def open_repository(location: str, cache_dir: Path) -> ModelRepository:
    """A repository at a local path, or at a URL mirrored into ``cache_dir``."""
    if "://" in location:
        return MirroredRepository(location, cache_dir)
    return ModelRepository(Path(location))


class MirroredRepository(ModelRepository):
    """A remote repository whose model folders are copied, verified, into a local mirror."""

    def __init__(self, url: str, cache_dir: Path) -> None:
        self.url = url.rstrip("/")
        try:
            self.fs, self.base = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise ModelLoadError(f"cannot open model repository {self.url}: {exc}") from exc
        # One mirror per URL, so two repositories never share (or clobber) a cache folder.
        super().__init__(cache_dir / hashlib.sha256(self.url.encode()).hexdigest()[:16])

    def check(self) -> None:
        try:
            found = self.fs.isdir(self.base)
        except OSError as exc:
            raise ModelLoadError(f"model repository {self.url} cannot be listed: {exc}") from exc
        if not found:
            raise ModelLoadError(f"model repository {self.url} does not exist or is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)

    def names(self) -> list[str]:
        self.fs.invalidate_cache()  # object-store listings are cached; a model added since must show
        entries = self.fs.ls(self.base, detail=True)
        return sorted(
            name
            for entry in entries
            if entry["type"] == "directory" and VALID_NAME.match(name := PurePosixPath(entry["name"]).name)
        )

    def contains(self, name: str) -> bool:
        return bool(VALID_NAME.match(name)) and bool(self.fs.isdir(f"{self.base}/{name}"))

    def source(self, name: str) -> ModelSource:
        self.fs.invalidate_cache()
        if not self.contains(name):
            raise ModelNotFound.unknown(name, detail=f"it is not in the model repository {self.url}")
        self.mirror(name)
        return super().source(name)

    def mirror(self, name: str) -> Path:
        """Bring the local copy of one model folder up to date with the store, verifying every file.

        Every key is checked, and every file is checked against SHA256SUMS' list, before anything is
        written, so a refused model leaves the mirror as it was.
        """
        remote_dir = f"{self.base}/{name}"
        local_dir = self.root / name
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
            with self.fs.open(key, "rb") as source, partial.open("wb") as sink:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ModelLoadError(f"{self.url}: cannot copy {key}: {exc}") from exc
        os.replace(partial, target)
        return digest.hexdigest()

    def _checksums(self, key: str) -> dict[str, str]:
        sums = {}
        for line in self.fs.cat_file(key).decode(errors="replace").splitlines():
            if line.strip():
                digest, _, path = line.strip().partition(" ")
                sums[path.lstrip(" *").removeprefix("./")] = digest.lower()
        return sums


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
