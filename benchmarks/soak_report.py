"""The soak's figures: RSS drift, answers by class, latency and throughput per window, as one JSON
document that the text report and the plot are both drawn from."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.soak_cases import FAILURES, Outcome
from benchmarks.soak_traffic import Tally

MIB = 2**20
COLOURS = {
    Outcome.REFUSED: "tab:gray",
    Outcome.WRONG: "tab:red",
    Outcome.UNEXPECTED: "tab:orange",
    Outcome.TRANSPORT: "tab:purple",
}


@dataclass(frozen=True)
class Sample:
    """The server process once a second: seconds since the load began, RSS, CPU, open files, threads."""

    t: float
    rss: int
    cpu_percent: float
    fds: int
    threads: int


def rss_figures(samples: list[Sample], warmup_s: float, target_percent: float) -> dict[str, Any]:
    """RSS at the start of measurement (after the warm-up), at the end and at its peak, and the drift:
    the median of the last minute against the median of the first minute after the warm-up."""
    after = [s for s in samples if s.t >= warmup_s]
    if not after:
        return {"measured": False}
    end = after[-1].t
    first = [s.rss for s in after if s.t < warmup_s + 60]
    last = [s.rss for s in after if s.t >= end - 60]
    drift = (statistics.median(last) / statistics.median(first) - 1) * 100
    return {
        "measured": True,
        "start_mib": after[0].rss / MIB,
        "end_mib": after[-1].rss / MIB,
        "peak_mib": max(s.rss for s in samples) / MIB,
        "first_minute_median_mib": statistics.median(first) / MIB,
        "last_minute_median_mib": statistics.median(last) / MIB,
        "first_minute_s": [after[0].t, min(warmup_s + 60, end)],
        "last_minute_s": [max(end - 60, after[0].t), end],
        "drift_percent": drift,
        "target_percent": target_percent,
    }


def process_figures(samples: list[Sample], warmup_s: float) -> dict[str, Any]:
    """Open files and threads at the start of measurement and at the end (a leak of either shows
    there before it shows in memory), and the server's mean CPU over the measurement."""
    after = [s for s in samples if s.t >= warmup_s]
    if not after:
        return {"measured": False}
    return {
        "measured": True,
        "fds": [after[0].fds, after[-1].fds],
        "threads": [after[0].threads, after[-1].threads],
        "mean_cpu_percent": statistics.fmean(s.cpu_percent for s in after),
    }


def answer_counts(totals: Counter[tuple[Outcome, str]]) -> dict[str, Any]:
    """Counts by class, and by status code within each class but ok."""
    counts: dict[str, Any] = {"ok": totals.get((Outcome.OK, "200"), 0) + totals.get((Outcome.OK, "grpc OK"), 0)}
    for outcome in (Outcome.REFUSED, *FAILURES):
        counts[outcome.value] = {code: n for (o, code), n in sorted(totals.items()) if o is outcome}
    return counts


def window_figures(tally: Tally, seconds: float, warmup_s: float) -> list[dict[str, Any]]:
    """Throughput, p50 and p99 of good answers, and answers by class, per window of a run of ``seconds``."""
    rows = []
    for i, window in enumerate(tally.windows):
        start = i * tally.window_s
        length = max(min(tally.window_s, seconds - start), 1e-3)
        latencies = np.frombuffer(window.latencies, dtype=np.float64) if window.latencies else None
        by_class = Counter[str]()
        for (outcome, _), n in window.answers.items():
            by_class[outcome.value] += n
        rows.append(
            {
                "start_s": start,
                "length_s": length,
                "warmup": start < warmup_s,
                "ok_per_s": by_class[Outcome.OK.value] / length,
                "p50_ms": float(np.percentile(latencies, 50) * 1000) if latencies is not None else None,
                "p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies is not None else None,
                "answers": dict(by_class),
            }
        )
    return rows


def print_report(document: dict[str, Any]) -> None:
    """The figures as text, ending with the verdict and its reasons."""
    settings, rss, answers = document["settings"], document["rss"], document["answers"]
    print(f"\nsoak of {settings['minutes']:g} min, {settings['clients']} clients, warm-up {settings['warmup_s']:g} s")
    if rss["measured"]:
        print(
            f"RSS: {rss['start_mib']:.1f} MiB at the start of measurement, {rss['end_mib']:.1f} at the end, "
            f"peak {rss['peak_mib']:.1f}; drift {rss['drift_percent']:+.2f} % (median "
            f"{rss['last_minute_median_mib']:.1f} MiB over {_span(rss['last_minute_s'])} vs "
            f"{rss['first_minute_median_mib']:.1f} over {_span(rss['first_minute_s'])}; "
            f"target under {rss['target_percent']:g} %)"
        )
    process = document["process"]
    if process["measured"]:
        (fds_start, fds_end), (threads_start, threads_end) = process["fds"], process["threads"]
        print(
            f"server: open files {fds_start} → {fds_end}, threads {threads_start} → {threads_end}, "
            f"mean CPU {process['mean_cpu_percent']:.0f} % of a core (this load generator: "
            f"{document['client_cpu_percent']:.0f} %)"
        )
    print(f"answers: ok {answers['ok']:,}")
    for outcome in (Outcome.REFUSED, *FAILURES):
        codes = answers[outcome.value]
        described = ", ".join(f"{code}: {n:,}" for code, n in codes.items()) or "none"
        print(f"  {outcome.value}: {sum(codes.values()):,} ({described})")
    print(f"\n{'window':>9} {'ok/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'refused':>8} {'failed':>7}")
    for row in document["windows"]:
        refused = row["answers"].get(Outcome.REFUSED.value, 0)
        failed = sum(row["answers"].get(o.value, 0) for o in FAILURES)
        p50, p99 = (f"{row[k]:8.3f}" if row[k] is not None else f"{'-':>8}" for k in ("p50_ms", "p99_ms"))
        mark = " (warm-up)" if row["warmup"] else ""
        print(f"{row['start_s']:7.0f} s {row['ok_per_s']:8.0f} {p50} {p99} {refused:8} {failed:7}{mark}")
    for failure in document["failures"]:
        print(f"  {failure}")
    print(f"\nserver: {document['server']['stopped']}")
    verdict = "PASS" if not document["reasons"] else "FAIL: " + "; ".join(document["reasons"])
    print(f"soak {verdict}")


def _span(seconds: list[float]) -> str:
    return f"{seconds[0]:.0f}-{seconds[1]:.0f} s"


def plot(document: dict[str, Any], path: Path) -> None:
    """Three panels over time: the server's RSS, p50 and p99 per window, and answers other than ok per window."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib: `pip install -e '.[bench]'` installs it") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (memory, latency, errors) = pyplot.subplots(3, 1, figsize=(11, 10), sharex=True)
    warmup = document["settings"]["warmup_s"]
    samples = document["samples"]
    memory.plot([s["t"] for s in samples], [s["rss_mib"] for s in samples], color="tab:blue")
    rss = document["rss"]
    if rss["measured"]:  # the two medians the drift compares
        for span, key in (("first_minute_s", "first_minute_median_mib"), ("last_minute_s", "last_minute_median_mib")):
            memory.hlines(rss[key], *rss[span], colors="tab:red", linestyles="dashed")
    drift = f", drift {rss['drift_percent']:+.2f} %" if rss["measured"] else ""
    memory.set(title=f"server RSS (dashed: the medians the drift compares{drift})", ylabel="MiB")
    windows = document["windows"]
    middles = [w["start_s"] + w["length_s"] / 2 for w in windows]
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s-")):
        latency.plot(middles, [w[key] if w[key] is not None else np.nan for w in windows], style)
    latency.set(title="latency of good answers per window", ylabel="ms", ylim=(0, None))
    rate = latency.twinx()
    rate.plot(middles, [w["ok_per_s"] for w in windows], color="tab:gray", alpha=0.5, label="ok/s")
    top = max((w["ok_per_s"] for w in windows), default=0.0) * 1.15
    rate.set(ylabel="ok answers/s", ylim=(0, top or 1))
    latency.legend([*latency.get_lines(), *rate.get_lines()], ["p50", "p99", "ok/s"], loc="lower left")
    widths = [0.8 * w["length_s"] for w in windows]
    bottom = np.zeros(len(windows))
    for outcome in (*FAILURES, Outcome.REFUSED):  # failures at the bottom, where a few still show
        counts = np.array([w["answers"].get(outcome.value, 0) for w in windows], dtype=float)
        errors.bar(middles, counts, widths, bottom=bottom, label=outcome.value, color=COLOURS[outcome])
        bottom += counts
    errors.set(title="answers other than ok per window", ylabel="answers", xlabel="seconds since the load began")
    errors.legend(loc="upper left", fontsize="small")
    for axes in (memory, latency, errors):
        axes.axvspan(0, warmup, color="0.9", zorder=0)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
