"""The models a server is about to load, put in place before it starts: what `preload-models.sh` runs
where no server answers yet, as in a pod's init container.

A repository on object storage (MODEL_REPOSITORY=s3://...) is mirrored into MODEL_CACHE_DIR and
verified by the server's own code, so the server's load then finds every file in place and only
checks it. A local repository is read the same way, so a model missing from it, or a version without
its file, fails here, before the server starts, with the message the server would give.

Usage: python scripts/lib/mirror.py [MODEL...]   (no MODEL: every model of the repository)
Exit status: 0 every model is in place; 1 one is not (each reason on stderr).
"""

from __future__ import annotations

import sys
import time

from modelserve.config import Settings
from modelserve.errors import ModelserveError
from modelserve.repository.remote import open_repository


def main(names: list[str]) -> int:
    """Mirror (or read) each model; report each one, and whether any failed."""
    settings = Settings()
    if not settings.model_repository:
        print("MODEL_REPOSITORY is not set: no repository to preload models from", file=sys.stderr)
        return 1
    repository = open_repository(settings.model_repository, settings.model_cache_dir)
    try:
        repository.check()
        names = names or repository.names()
    except ModelserveError as exc:
        print(f"{settings.model_repository}: {exc.message}", file=sys.stderr)
        return 1
    failed = 0
    for name in names:
        started = time.perf_counter()
        try:
            source = repository.source(name)
        except ModelserveError as exc:
            print(f"model '{name}': {exc.message}", file=sys.stderr)
            failed += 1
            continue
        versions = source.selected_versions()
        # An ensemble's version folder stands for a file it has none of; every other version needs its file.
        needed = [source.files[v] for v in versions] if source.platform.filenames else []
        missing = [str(path) for path in needed if not path.is_file()]
        if missing:
            print(f"model '{name}': missing {', '.join(missing)}", file=sys.stderr)
            failed += 1
            continue
        took = time.perf_counter() - started
        listed = ", ".join(map(str, versions))
        print(f"model '{name}' in place in {source.directory} (versions {listed}) in {took:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
