"""A real PostgreSQL server for the tests: Debian's package unpacked into .tools, started in a temp folder.

`make tools` unpacks it (an installed ``postgresql-15`` package serves as well). PostgreSQL refuses to
run as root, so as root the cluster is created and run as ``nobody`` through util-linux's ``setpriv``,
in a folder given to that user; as any other user it runs as that user.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.e2e.server import free_port

ROOT = Path(__file__).resolve().parent.parent
UNPACKED = ROOT / ".tools" / "root"
SUPERUSER = "postgres"
_names = itertools.count()


def binaries() -> Path:
    """The folder holding initdb, pg_ctl and postgres; fails, saying how to get them, when there is none."""
    for root in (UNPACKED / "usr" / "lib" / "postgresql", Path("/usr/lib/postgresql")):
        found = sorted(root.glob("*/bin/pg_ctl"))
        if found:
            return found[-1].parent
    raise AssertionError("PostgreSQL is missing: `make test` (or `make tools`) unpacks Debian's package into .tools")


def client_environment() -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH under which a script finds pg_dump and pg_restore, beside the server's
    binaries; fails, saying how to get them, when they are not there."""
    bin_dir = binaries()
    missing = [name for name in ("pg_dump", "pg_restore") if not (bin_dir / name).exists()]
    if missing:
        raise AssertionError(
            f"{' and '.join(missing)} missing from {bin_dir}: `make test` (or `make tools`) unpacks Debian's "
            "postgresql-client-15 into .tools"
        )
    libraries = UNPACKED / "usr" / "lib" / "x86_64-linux-gnu"
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LD_LIBRARY_PATH": str(libraries)}


@dataclass(frozen=True)
class PostgresServer:
    """A running cluster, reached over TCP on loopback as its superuser (trust authentication)."""

    port: int

    def url(self, database: str = SUPERUSER) -> str:
        """SQLAlchemy URL of ``database`` on this server, through psycopg 3."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database's name: each test gets its own."""
        name = f"test_{os.getpid()}_{next(_names)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing any connection a test left open."""
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Initialise a cluster in a new temp folder, start it on a free port, and remove it all afterwards."""
    bin_dir = binaries()
    folder = Path(tempfile.mkdtemp(prefix="modelserve-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody", "nogroup")
        as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    libraries = UNPACKED / "usr" / "lib" / "x86_64-linux-gnu"
    env = {**os.environ, "LD_LIBRARY_PATH": str(libraries), "LC_ALL": "C"}
    data = folder / "data"

    def run(*command: str) -> None:
        result = subprocess.run([*as_user, *command], env=env, capture_output=True, text=True, timeout=60, check=False)
        log = folder / "server.log"
        assert result.returncode == 0, (
            f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}{log.read_text() if log.exists() else ''}"
        )

    port = free_port()
    run(str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--no-locale", "-E", "UTF8", "-N")
    # Durability off (fsync, synchronous_commit): the cluster lives as long as the test session.
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "start")
    try:
        yield PostgresServer(port)
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
