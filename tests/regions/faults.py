"""A fault proxy in front of an S3 endpoint: moto stores whatever it is sent and accepts wrong checksums,
so the faults a real network and a real S3 inflict are injected here, between the client and moto.

Each request is forwarded unless a fault is drawn for it (probability ``rate``, kinds drawn evenly) or
scripted with ``fail_next``:

- ``503``: S3's SlowDown, without forwarding; ``500``: InternalError, without forwarding;
- ``reset``: a request with a body is read and the connection reset (RST) before forwarding; a GET is
  forwarded and its connection reset halfway through the body;
- ``cut``: a GET's body stops halfway (the connection closes as if done); a request with a body as ``reset``;
- ``flip``: one byte of a GET's body, or of a PUT's or part upload's body before forwarding, is flipped.

Every connection is closed after its answer, so each request is one connection and a reset hurts only it.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("503", "500", "reset", "cut", "flip")
_ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
}

Match = Callable[[str, str], bool]  # (method, path with query) -> whether a scripted fault applies


class FaultProxy:
    """Forwards HTTP to ``upstream``, injecting faults; ``url`` is where clients connect."""

    def __init__(self, upstream: str, rate: float = 0.0, kinds: tuple[str, ...] = KINDS, seed: int = 0) -> None:
        self.upstream = urlsplit(upstream)
        self.rate = rate
        self.kinds = kinds
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.scripted: deque[tuple[str, Match]] = deque()
        self.seen: list[tuple[str, str, str]] = []  # (method, path, Range header) of every request
        self.sent: list[tuple[str, str, str]] = []  # (method, path, Content-MD5 header) of every request with a body
        self.delay_s = 0.0  # added before forwarding each request with a body: a slow link
        self.hooks: list[tuple[Match, Callable[[], None]]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except OSError:
                    self.close_connection = True

            def __getattr__(self, name: str) -> Callable[[], None]:
                if name.startswith("do_"):
                    return lambda: proxy._handle(self)
                raise AttributeError(name)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, kind: str, match: Match = lambda method, path: True) -> None:
        """Inject ``kind`` into the next request ``match`` accepts (scripted faults apply in order)."""
        with self.lock:
            self.scripted.append((kind, match))

    def before_next(self, match: Match, action: Callable[[], None]) -> None:
        """Run ``action`` just before forwarding the next request ``match`` accepts: another client's
        write landing between this client's read and its write, say."""
        with self.lock:
            self.hooks.append((match, action))

    def _draw(self, method: str, path: str, has_key: bool, has_body: bool) -> str | None:
        with self.lock:
            self.requests += 1
            for index, (kind, match) in enumerate(self.scripted):
                if match(method, path):
                    del self.scripted[index]
                    self.injected[kind] += 1
                    return kind
            if self.rate <= 0 or self.random.random() >= self.rate:
                return None
            possible = [k for k in self.kinds if k in _ERRORS or (has_key and (method == "GET" or has_body))]
            if not possible:
                return None
            kind = self.random.choice(possible)
            self.injected[kind] += 1
            return kind

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        has_key = len(urlsplit(path).path.strip("/").split("/", 1)) == 2
        with self.lock:
            self.seen.append((method, path, handler.headers.get("Range", "")))
            if body:
                self.sent.append((method, path, handler.headers.get("Content-MD5", "")))
        if body and self.delay_s:
            time.sleep(self.delay_s)
        with self.lock:
            due = next((hook for hook in self.hooks if hook[0](method, path)), None)
            if due is not None:
                self.hooks.remove(due)
        if due is not None:
            due[1]()
        kind = self._draw(method, path, has_key, bool(body))
        handler.close_connection = True
        if kind in _ERRORS:
            status, code, message = _ERRORS[kind]
            xml = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
            _answer(handler, status, [("Content-Type", "application/xml")], xml)
            return
        if body and kind in ("reset", "cut"):
            _reset(handler)
            return
        if body and kind == "flip":
            body = _flipped(body, self.random)
        status, headers, answer = self._forward(method, path, handler, body)
        if method == "GET" and answer and status in (200, 206):
            if kind == "flip":
                answer = _flipped(answer, self.random)
            elif kind in ("reset", "cut"):
                _answer(handler, status, headers, answer, cut_at=len(answer) // 2, reset=kind == "reset")
                return
        _answer(handler, status, headers, answer)

    def _forward(
        self, method: str, path: str, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("connection", "expect")}
            connection.request(method, path, body=body if body else None, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            kept = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in ("connection", "transfer-encoding", "server", "date")
                and (method == "HEAD" or k.lower() != "content-length")
            ]
            return response.status, kept, answer
        finally:
            connection.close()


def _answer(
    handler: BaseHTTPRequestHandler,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    cut_at: int | None = None,
    reset: bool = False,
) -> None:
    handler.send_response_only(status)
    for name, value in headers:
        handler.send_header(name, value)
    if handler.command != "HEAD" or not any(k.lower() == "content-length" for k, _ in headers):
        handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body if cut_at is None else body[:cut_at])
    handler.wfile.flush()
    if reset:
        _reset(handler)


def _reset(handler: BaseHTTPRequestHandler) -> None:
    connection: socket.socket = handler.connection
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def _flipped(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
