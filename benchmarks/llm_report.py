"""What benchmarks/llm.py prints, judges and writes: the table with its ratios, the targets, the plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.llm_inprocess import RAW, Agreement
from benchmarks.llm_servers import MODELSERVE, MODELSERVE_INT8, TRANSFORMERS_SERVE, Memory
from benchmarks.llm_timing import Point

SYSTEMS = (RAW, MODELSERVE, MODELSERVE_INT8, TRANSFORMERS_SERVE)
_TIMES = ("ttft_p50", "ttft_p99", "itl_p50", "itl_p99", "gap_p99")


@dataclass(frozen=True)
class Verdict:
    """One target of the issue on one model: met, not met, or not measured (``met`` None), with the figures."""

    size: str
    target: str
    met: bool | None
    figures: str


def find(points: list[Point], size: str, system: str, streams: int) -> Point | None:
    """The row of ``system`` at ``streams`` on the model ``size``, where it was measured."""
    return next((p for p in points if (p.size, p.system, p.streams) == (size, system, streams)), None)


def print_table(
    size: str, described: str, points: list[Point], memory: list[Memory], agreement: list[Agreement]
) -> None:
    """The rows of one model grouped by concurrency, with tokens/s over raw batch-1 generate()'s and over
    `transformers serve`'s at the same concurrency; then idle memory, and int8's and bfloat16's accuracy."""
    mine = [p for p in points if p.size == size]
    raw = find(mine, size, RAW, 1)
    print(f"\n{size}: {described}")
    print("raw generate() at N streams is a static batch of N; ITL is each stream's mean time a token after its")
    print("first; gap p99 is the 99th percentile of the waits between two chunks (tokens, for raw); ms throughout")
    header = f"{'system':20} {'streams':>7} {'tokens/s':>9} {'vs raw b1':>9} {'vs tf serve':>11}"
    print(header + "".join(f" {name:>8}" for name in ("TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "gap p99")))
    short = False
    for streams in sorted({p.streams for p in mine}):
        peer = find(mine, size, TRANSFORMERS_SERVE, streams)
        for system in SYSTEMS:
            point = find(mine, size, system, streams)
            if point is None:
                continue
            flag = "*" if point.tokens != point.expected else " "
            short = short or flag == "*"
            over_raw = f"{point.tokens_s / raw.tokens_s:9.2f}" if raw else f"{'':9}"
            over_peer = f"{point.tokens_s / peer.tokens_s:11.2f}" if peer else f"{'':11}"
            times = "".join(f" {value * 1000:8.1f}" if value is not None else f" {'':8}" for value in _times(point))
            print(f"{system:20} {streams:7} {point.tokens_s:8.0f}{flag} {over_raw} {over_peer}{times}")
    if short:
        print("* fewer output tokens than asked for came back; tokens/s counts those received")
    print("idle memory of the server's process and its children, RSS and PSS in MiB:")
    print(f"  {'':20} {'model loaded':>15} {'after the run':>15}")
    for system in SYSTEMS:
        held = [m for m in memory if (m.size, m.system) == (size, system)]
        if held:
            figures = "".join(f" {f'{m.rss_mib:.0f} / {m.pss_mib:.0f}':>15}" for m in held)
            print(f"  {system:20}{figures}  ({held[0].processes} process{'es' if held[0].processes > 1 else ''})")
    for a in agreement:
        print(
            f"{a.variant} against float32, {a.prompts} prompts of {a.tokens} greedy tokens: "
            f"{a.same_continuation:.0%} identical, {a.common_prefix:.0%} of each generated before the first "
            f"difference; next-token agreement on float32's text {a.top1:.1%}; first-step logit error "
            f"{a.logit_mae:.4f} (mean |logit| {a.logit_scale:.3f})"
        )


def _times(point: Point) -> list[float | None]:
    return [getattr(point, name) for name in _TIMES]


def verdicts(size: str, points: list[Point]) -> list[Verdict]:
    """The issue's targets on one model, from figures of this run."""
    raw = find(points, size, RAW, 1)
    ours32, peer32 = find(points, size, MODELSERVE, 32), find(points, size, TRANSFORMERS_SERVE, 32)
    ours1 = find(points, size, MODELSERVE, 1)
    return [
        _ratio(size, "32 streams: tokens/s >= 2x transformers serve's", ours32, peer32, "tokens_s", 2.0, True),
        _ratio(size, "32 streams: tokens/s >= 3x raw batch-1 generate()'s", ours32, raw, "tokens_s", 3.0, True),
        _ratio(size, "1 stream: TTFT p50 <= 1.2x raw generate()'s first token", ours1, raw, "ttft_p50", 1.2, False),
        _ratio(size, "1 stream: ITL p50 <= 1.1x raw generate()'s", ours1, raw, "itl_p50", 1.1, False),
    ]


def _ratio(
    size: str, target: str, ours: Point | None, base: Point | None, field: str, bound: float, above: bool
) -> Verdict:
    mine = getattr(ours, field, None)
    theirs = getattr(base, field, None)
    if mine is None or theirs is None:
        return Verdict(size, target, None, "a figure it compares was not measured in this run")
    ratio = mine / theirs
    unit, scale = ("tokens/s", 1) if field == "tokens_s" else ("ms", 1000)
    figures = f"{ratio:.2f}x: {mine * scale:,.1f} against {theirs * scale:,.1f} {unit}"
    return Verdict(size, target, ratio >= bound if above else ratio <= bound, figures)


def print_verdicts(found: list[Verdict]) -> None:
    print("\ntargets (modelserve, float32):")
    for v in found:
        state = "not measured" if v.met is None else "met" if v.met else "NOT MET"
        print(f"  {v.size:5} {v.target:58} {state:12} ({v.figures})")


def write_json(
    path: Path,
    settings: dict[str, object],
    points: list[Point],
    memory: list[Memory],
    accuracy: dict[str, list[Agreement]],
    targets: list[Verdict],
) -> None:
    """Every row of the run, with its settings, idle memory, accuracy against float32 and the targets judged."""
    document = {
        "settings": settings,
        "rows": [asdict(p) for p in points],
        "idle_memory": [asdict(m) for m in memory],
        "accuracy": {size: [asdict(a) for a in found] for size, found in accuracy.items()},
        "targets": [asdict(v) for v in targets],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def plot(path: Path, sizes: list[str], points: list[Point]) -> None:
    """A row per model: tokens/s, TTFT p50 and ITL p50 against concurrent streams, a line per system."""
    import matplotlib  # benchmarks/llm.py refuses --plot up front where it is not installed

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(len(sizes), 3, figsize=(15, 4.5 * len(sizes)), squeeze=False)
    for (rate, first, between), size in zip(axes, sizes, strict=True):
        for color, system in enumerate(SYSTEMS):
            mine = sorted((p for p in points if (p.size, p.system) == (size, system)), key=lambda p: p.streams)
            label = f"{system} (a static batch)" if system == RAW else system
            style = {"color": f"C{color}", "marker": "o", "label": label}
            rate.plot([p.streams for p in mine], [p.tokens_s for p in mine], **style)
            first.plot([p.streams for p in mine], [p.ttft_p50 * 1000 for p in mine], **style)
            timed = [(p.streams, p.itl_p50 * 1000) for p in mine if p.itl_p50 is not None]
            between.plot([count for count, _ in timed], [itl for _, itl in timed], **style)
        rate.set(title=f"{size}: output tokens/s", ylabel="tokens/s")
        first.set(title=f"{size}: time to first token, p50", ylabel="ms")
        between.set(title=f"{size}: inter-token latency, p50", ylabel="ms")
        counts = sorted({p.streams for p in points if p.size == size})
        for axis in (rate, first, between):
            axis.set(xlabel="concurrent streams", xscale="log", ylim=(0, None))
            axis.set_xticks(counts, [str(count) for count in counts])
            axis.minorticks_off()
            axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
