"""HAProxy's runtime API (its ``stats socket``): read the servers' states and sessions, set a server's state.

One command per connection, as ``socat`` sends them: HAProxy answers and closes. The socket is a
Unix path (``/run/modelserve/haproxy.sock``) or ``host:port`` for a TCP one.
"""

from __future__ import annotations

import csv
import io
import socket
from dataclasses import dataclass
from pathlib import Path

STATES = ("ready", "drain", "maint")


class RuntimeAPIError(Exception):
    """HAProxy could not be reached, or refused a command; the message says which and why."""


@dataclass(frozen=True)
class ServerStat:
    """One server row of ``show stat``."""

    backend: str
    server: str
    status: str  # UP, DOWN, DRAIN, MAINT, "UP 1/2" while rising, "no check", ...
    sessions: int  # current sessions (scur)
    total: int  # sessions since start (stot)
    backup: bool
    check_status: str
    last_change_s: int  # seconds since the last state change

    @property
    def up(self) -> bool:
        """Whether HAProxy sends it new requests (a draining server is up but takes none)."""
        return self.status == "UP"


class RuntimeAPI:
    """A client of one HAProxy's runtime API."""

    def __init__(self, address: str | Path, timeout_s: float = 5.0) -> None:
        self.address = str(address)
        self.timeout_s = timeout_s

    def command(self, line: str) -> str:
        """Send ``line`` and return HAProxy's whole answer."""
        try:
            sock = self._connect()
        except OSError as exc:
            raise RuntimeAPIError(
                f"cannot reach HAProxy's runtime API at {self.address}: {exc.strerror or exc} "
                "(is the router running, and is ROUTER_RUNTIME_API its stats socket?)"
            ) from None
        with sock:
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def _connect(self) -> socket.socket:
        host, _, port = self.address.rpartition(":")
        if host and port.isdigit() and "/" not in self.address:
            return socket.create_connection((host, int(port)), timeout=self.timeout_s)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        return sock

    def stats(self) -> list[ServerStat]:
        """Every server of every backend, from ``show stat``."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return [
            ServerStat(
                backend=row["pxname"],
                server=row["svname"],
                status=row["status"],
                sessions=int(row["scur"] or 0),
                total=int(row["stot"] or 0),
                backup=row["bck"] == "1",
                check_status=row.get("check_status") or "",
                last_change_s=int(row["lastchg"] or 0),
            )
            for row in rows
            if row.get("svname") not in (None, "FRONTEND", "BACKEND")
        ]

    def set_state(self, backend: str, server: str, state: str) -> None:
        """``set server backend/server state ready|drain|maint``; a RuntimeAPIError carries HAProxy's refusal."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        answer = self.command(f"set server {backend}/{server} state {state}").strip()
        if answer:  # HAProxy answers nothing when it obeys
            raise RuntimeAPIError(f"HAProxy refused 'set server {backend}/{server} state {state}': {answer}")
