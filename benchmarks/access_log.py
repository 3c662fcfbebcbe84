"""CPU time one access line costs, in-process: in the thread that answers the request (the event loop's)
and in the access log's writer thread, with JSON logs at the defaults, into a file.

    .venv/bin/python -m benchmarks.access_log [--lines 100000] [--rounds 5]

Each round records ``--lines`` lines from inside a request's context (its ids set, as the protocols set
them), in chunks of 2,000 with a pause after each, as a server answering 20,000 requests a second
would leave them; the request path is timed with ``time.thread_time``, the writer thread with its own
CPU clock. Prints the medians of the rounds, and the lines dropped (there should be none).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time

from modelserve.observability.logging import FLUSH_INTERVAL_S, AccessLog, configure_logging
from modelserve.observability.tracing import begin_request

CHUNK = 2_000  # lines per pause: 0.1 s of a 20,000 requests/s server


def _thread_cpu(name: str) -> float:
    """CPU seconds of the live thread called ``name``."""
    thread = next(t for t in threading.enumerate() if t.name == name)
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def one_round(lines: int) -> tuple[float, float, int]:
    """(µs on the request path, µs in the writer thread) per line, and the lines dropped."""
    dropped = 0

    def count(n: int) -> None:
        nonlocal dropped
        dropped += n

    log = AccessLog(1.0, count)
    log.record("mlp", "1", "http", 200, 0.000412, None)  # starts the writer thread
    writer_started = _thread_cpu("access-log")
    on_path = 0.0
    for _ in range(lines // CHUNK):
        started = time.thread_time()
        for _ in range(CHUNK):
            log.record("mlp", "1", "http", 200, 0.000412, None)
        on_path += time.thread_time() - started
        time.sleep(FLUSH_INTERVAL_S * 2)  # the writer takes the chunk
    writer = _thread_cpu("access-log") - writer_started
    log.close()
    return on_path / lines * 1e6, writer / lines * 1e6, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_logging("info", "json")
    begin_request(None)
    with tempfile.TemporaryFile("w") as sink:
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(sink)
        results = [one_round(args.lines) for _ in range(args.rounds)]
    path, writer, dropped = zip(*results, strict=True)
    print(f"access log, µs of CPU per line, medians of {args.rounds} rounds of {args.lines:,} lines:")
    print(f"  request path {statistics.median(path):.2f}  (rounds: {', '.join(f'{c:.2f}' for c in path)})")
    print(f"  writer thread {statistics.median(writer):.2f}  (rounds: {', '.join(f'{c:.2f}' for c in writer)})")
    print(f"  dropped: {sum(dropped)}")


if __name__ == "__main__":
    main()
