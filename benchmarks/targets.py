"""The speed targets of docs/PERFORMANCE.md, judged from one run of benchmarks/serving.py.

Each target is a ratio of two medians measured in the same run (the machine is noisy, and a ratio
of figures taken minutes apart on it means little): what the target compares, the ratio reached,
the bound it must meet, and whether it does. ``make bench`` prints them as one table.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

Row = dict[str, object]

# The systems a run measures, as its rows name them.
OURS = "modelserve"  # default settings: the access log on, every request, written to a file
LOG_OFF = "modelserve, access log off"  # the same with ACCESS_LOG_SAMPLE_RATE=0
DELAY = "modelserve, delay 5 ms"  # max_queue_delay_ms: 5, the delay waited when it can pay
FIXED_DELAY = "modelserve, fixed 5 ms"  # max_queue_delay_ms: 5, waited out by every batch
ECHO = "echo"  # uvicorn or grpc.aio answering fixed bytes
ECHOES = (ECHO, "echo, grpc-sync", "echo, grpc-sync-2", "echo, grpc-sync-4")  # and grpc's thread pools
MLSERVER = "mlserver"


@dataclass(frozen=True)
class Verdict:
    """One target: ``value`` against ``bound`` (``at_least`` or at most); None where it was not measured."""

    name: str
    compares: str
    value: float | None
    bound: float
    at_least: bool = True

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.bound if self.at_least else self.value <= self.bound


@dataclass(frozen=True)
class Medians:
    """Medians of a run's rows by model, system, protocol and clients."""

    rows: Sequence[Row]

    def point(self, model: str, system: str, protocol: str, clients: int, field: str = "inf_per_s") -> float | None:
        """The median of ``field`` at one point, or None where the run did not measure it."""
        values = [float(r[field]) for r in self._at(model, system, protocol, clients)]  # type: ignore[arg-type]
        return statistics.median(values) if values else None

    def floor(self, model: str, protocol: str, clients: int) -> float | None:
        """The best echo server's median inf/s at one point: the floor a server is compared with."""
        return _best(*(self.point(model, echo, protocol, clients) for echo in ECHOES))

    def errors(self, model: str, system: str, protocol: str, clients: int) -> int:
        """Failed requests at one point, over every run."""
        return sum(int(r["errors"]) for r in self._at(model, system, protocol, clients))  # type: ignore[call-overload]

    def _at(self, model: str, system: str, protocol: str, clients: int) -> list[Row]:
        key = (model, system, protocol, clients)
        return [r for r in self.rows if (r["model"], r["system"], r["protocol"], r["clients"]) == key]


def echo_system(kind: str) -> str:
    """The system name of benchmarks/echo.py's server of ``kind``: grpc.aio is the plain echo."""
    return ECHO if kind in ("http", "grpc") else f"echo, {kind}"


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def _best(*values: float | None) -> float | None:
    measured = [v for v in values if v is not None]
    return max(measured) if measured else None


def verdicts(rows: Sequence[Row], model: str = "mlp", resnet: str = "resnet18") -> list[Verdict]:
    """Every target of the issue that a run measured, in the order PERFORMANCE.md lists them."""
    m = Medians(rows)

    def at(system: str, protocol: str, clients: int, field: str = "inf_per_s") -> float | None:
        return m.point(model, system, protocol, clients, field)

    found = []
    for protocol in ("http-binary", "grpc"):
        for clients in (1, 32):
            found.append(
                Verdict(
                    f"access log costs ≤ 5 %: {protocol}, {clients} clients",
                    "inf/s with the default access log ÷ with it off",
                    _ratio(at(OURS, protocol, clients), at(LOG_OFF, protocol, clients)),
                    0.95,
                )
            )
    found.append(
        Verdict(
            "adaptive delay: 1 client's p50",
            "p50 with max_queue_delay_ms 5 ÷ p50 with no delay (HTTP binary)",
            _ratio(at(DELAY, "http-binary", 1, "p50_ms"), at(OURS, "http-binary", 1, "p50_ms")),
            1.5,
            at_least=False,
        )
    )
    found.append(
        Verdict(
            "adaptive delay: 32 clients' throughput",
            "inf/s with max_queue_delay_ms 5 ÷ the same delay waited out (HTTP binary)",
            _ratio(at(DELAY, "http-binary", 32), at(FIXED_DELAY, "http-binary", 32)),
            1.0,
        )
    )
    found.append(
        Verdict(
            "gRPC near its floor",
            "inf/s at 32 clients ÷ the best Python gRPC echo (grpc.aio, thread pools of 2, 4, 8)",
            _ratio(at(OURS, "grpc", 32), m.floor(model, "grpc", 32)),
            0.7,
        )
    )
    found.append(
        Verdict(
            "gRPC against MLServer",
            "inf/s at 32 clients ÷ MLServer's gRPC",
            _ratio(at(OURS, "grpc", 32), at(MLSERVER, "grpc", 32)),
            2.0,
        )
    )
    for protocol in ("http-binary", "http-json"):
        found.append(
            Verdict(
                f"HTTP near its floor: {protocol}",
                "inf/s at 32 clients ÷ the uvicorn echo answering the same bytes",
                _ratio(at(OURS, protocol, 32), at(ECHO, protocol, 32)),
                0.35,
            )
        )
    found.append(
        Verdict(
            "JSON tensors near binary",
            f"{resnet} inf/s at 8 clients, JSON ÷ binary",
            _ratio(m.point(resnet, OURS, "http-json", 8), m.point(resnet, OURS, "http-binary", 8)),
            0.8,
        )
    )
    return found


def print_verdicts(found: Sequence[Verdict]) -> None:
    """The one-screen table: each target's ratio, its bound, and pass or fail."""
    print(f"\n{'target':44} {'ratio':>7} {'bound':>8}  result   what is compared")
    for verdict in found:
        value = f"{verdict.value:7.3f}" if verdict.value is not None else "      -"
        bound = f"{'≥' if verdict.at_least else '≤'} {verdict.bound:g}"
        result = {True: "pass", False: "FAIL", None: "not run"}[verdict.met]
        print(f"{verdict.name:44} {value} {bound:>8}  {result:7}  {verdict.compares}")
