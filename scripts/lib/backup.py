"""The parts of backup-model-serving.sh and restore-model-serving.sh that shell does badly: copying a
model repository between a folder and a bucket, SQLite's online backup, and turning Kubernetes objects
as `kubectl get -o json` lists them into objects `kubectl apply` accepts.

  python scripts/lib/backup.py copy SOURCE TARGET   a folder or fsspec URL (s3://bucket/models) into another
  python scripts/lib/backup.py sqlite SOURCE TARGET  a consistent copy of a SQLite database, even while written
  python scripts/lib/backup.py kube FILE...          one List of the objects to apply, on stdout

Only `copy` with a URL needs more than the standard library (fsspec, and s3fs for S3: modelserve's
environment has both). Exit status: 0 done; 1 failed, the reason on stderr.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The traffic history's SQLite file lives in MODEL_CACHE_DIR, which may be the repository itself: it
# is backed up on its own, consistently, never as a model file copied while being written.
HISTORY_FILES = ("history.sqlite3", "history.sqlite3-wal", "history.sqlite3-shm", "history.sqlite3-journal")
# Objects the cluster makes and owns: applied, they would fight their owners or be refused.
SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")
MADE_BY_THE_CLUSTER = {("ConfigMap", "kube-root-ca.crt")}


def _skipped(relative: str) -> bool:
    return relative.rsplit("/", 1)[-1] in HISTORY_FILES or relative.endswith(".partial")


def _files(location: str) -> Iterator[tuple[str, str]]:
    """(relative path, full path or key) of every file under a folder or URL."""
    if "://" not in location:
        root = Path(location)
        if not root.is_dir():
            raise FileNotFoundError(f"{location} is not a folder")
        for path in sorted(root.rglob("*")):
            if path.is_file():
                yield path.relative_to(root).as_posix(), str(path)
        return
    import fsspec

    fs, base = fsspec.core.url_to_fs(location)
    base = base.rstrip("/")
    for key in sorted(fs.find(base)):
        yield key.removeprefix(f"{base}/"), key


def copy(source: str, target: str) -> int:
    """Copy every file of ``source`` to the same place under ``target``; the history's files excepted."""
    if "://" in source and "://" in target:
        raise ValueError("one of the two must be a folder on this machine")
    remote = source if "://" in source else target if "://" in target else None
    fs: Any = None
    if remote is not None:
        import fsspec

        fs, base = fsspec.core.url_to_fs(remote)
        prefix = base.rstrip("/")
    count = size = 0
    for relative, path in _files(source):
        if _skipped(relative):
            continue
        if "://" in target:
            fs.put_file(path, f"{prefix}/{relative}")
            size += Path(path).stat().st_size
        else:
            destination = Path(target, relative)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if "://" in source:
                fs.get_file(path, str(destination))
            else:
                shutil.copy2(path, destination)
            size += destination.stat().st_size
        count += 1
    print(f"{count} files, {size / 1e6:.1f} MB: {source} -> {target}")
    return 0


def sqlite(source: str, target: str) -> int:
    """SQLite's online backup of ``source`` into ``target``: consistent even while a server writes it."""
    if not Path(source).is_file():
        raise FileNotFoundError(f"{source}: no such database file")
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as reading, sqlite3.connect(target) as writing:
        reading.backup(writing)
        (verdict,) = writing.execute("PRAGMA integrity_check").fetchone()
        tables = [row[0] for row in writing.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    reading.close()
    writing.close()
    if verdict != "ok":
        raise ValueError(f"{target}: the copy fails SQLite's integrity check: {verdict}")
    print(f"{source} -> {target}: {len(tables)} tables")
    return 0


def _appliable(item: dict[str, Any]) -> dict[str, Any] | None:
    """The object without what the cluster set on it, or None for one it makes itself."""
    metadata = item.get("metadata", {})
    kind = item.get("kind", "")
    if metadata.get("ownerReferences") or (kind, metadata.get("name")) in MADE_BY_THE_CLUSTER:
        return None
    if kind == "Secret" and item.get("type") == "kubernetes.io/service-account-token":
        return None
    item = {key: value for key, value in item.items() if key != "status"}
    item["metadata"] = {key: value for key, value in metadata.items() if key not in SERVER_FIELDS}
    if kind == "Service":
        # Addresses of the cluster it came from; the cluster restored into allocates its own.
        spec = item.get("spec", {})
        item["spec"] = {key: value for key, value in spec.items() if key not in ("clusterIP", "clusterIPs")}
    return item


def kube(files: list[str]) -> int:
    """One List of the objects of ``files`` (each as `kubectl get -o json` writes it) to apply."""
    items: list[dict[str, Any]] = []
    for name in files:
        document = json.loads(Path(name).read_text())
        for item in document.get("items", [document] if "kind" in document else []):
            if (kept := _appliable(item)) is not None:
                items.append(kept)
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout, indent=1)
    print()
    return 0


def main(argv: list[str]) -> int:
    """Run one command; any failure is one line on stderr and exit status 1."""
    pairs = {"copy": copy, "sqlite": sqlite}
    if not argv or not ((argv[0] in pairs and len(argv) == 3) or argv[0] == "kube"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return kube(argv[1:]) if argv[0] == "kube" else pairs[argv[0]](argv[1], argv[2])
    except (OSError, ValueError, sqlite3.Error, ImportError) as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
