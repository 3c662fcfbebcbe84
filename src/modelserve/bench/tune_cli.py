"""``modelserve tune``'s command line: the sweep's options in, its table, plot and chosen config out
(bench/tune.py does the sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from modelserve.terminal import err


def _numbers(text: str, kind: type[int] | type[float]) -> list[Any]:
    try:
        return [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers") from None


def tune(
    model: str,
    model_repository: Annotated[Path, typer.Option(help="The local repository holding the model.")],
    latency_budget_ms: Annotated[float, typer.Option(min=0.01, help="The p99 latency the chosen config must keep.")],
    max_batch_size: Annotated[str, typer.Option(help="Comma-separated sizes to try.")] = "1,8,32",
    queue_delay_ms: Annotated[str, typer.Option(help="Comma-separated batching delays to try (ms).")] = "0,2",
    instance_count: Annotated[str, typer.Option(help="Comma-separated instance counts to try.")] = "1,2",
    threads: Annotated[
        str, typer.Option(help="Comma-separated ONNX Runtime intra-op threads to try; empty: the default.")
    ] = "",
    clients: Annotated[int, typer.Option(min=1, help="Concurrent closed-loop clients.")] = 32,
    protocol: Annotated[str, typer.Option(help="http-json, http-binary or grpc.")] = "http-binary",
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds measured per candidate.")] = 5.0,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of load before measuring.")] = 1.0,
    max_minutes: Annotated[float, typer.Option(min=0.01, help="Stop starting candidates after this long.")] = 10.0,
    write: Annotated[bool, typer.Option("--write", help="Write the chosen config into config.yaml.")] = False,
    plot_to: Annotated[Path | None, typer.Option("--plot", help="Write the frontier as a PNG here.")] = None,
) -> None:
    """Sweep batch size, batching delay, instances and threads under load; keep the fastest config within
    the latency budget (what Triton users run Model Analyzer for)."""
    from rich.progress import Progress

    from modelserve.bench import tune as tuner
    from modelserve.bench.workload import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise typer.BadParameter(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if not (model_repository / model).is_dir():
        err.print(f"[red]{model_repository / model} is not a model folder of the repository[/red]")
        raise typer.Exit(2)
    candidates = tuner.grid(
        _numbers(max_batch_size, int),
        _numbers(queue_delay_ms, float),
        _numbers(instance_count, int),
        _numbers(threads, int) or [None],
    )
    with Progress(console=err) as progress:
        task = progress.add_task(f"tuning {model}", total=len(candidates))

        def started(candidate: tuner.Candidate) -> None:
            progress.update(task, description=candidate.describe(), advance=1)

        points = tuner.tune(
            model_repository,
            model,
            candidates,
            clients=clients,
            protocol=protocol,
            duration_s=duration,
            warmup_s=warmup,
            max_minutes=max_minutes,
            progress=started,
        )
    chosen = tuner.best(points, latency_budget_ms)
    edge = {id(p) for p in tuner.frontier(points)}
    table = Table("batch", "delay ms", "inst.", "threads", "inf/s", "p50 ms", "p99 ms", "errors", "")
    for point in sorted(points, key=lambda p: -p.inferences_per_second):
        c = point.candidate
        mark = "chosen" if point is chosen else ("frontier" if id(point) in edge else "")
        table.add_row(
            *(str(v) for v in (c.max_batch_size, f"{c.queue_delay_ms:g}", c.instance_count, c.threads or "default")),
            f"{point.inferences_per_second:,.0f}",
            f"{point.p50_ms:.2f}",
            f"{point.p99_ms:.2f}",
            str(point.errors),
            mark,
        )
    Console().print(table)
    if len(points) < len(candidates):
        err.print(f"{len(candidates) - len(points)} candidate(s) not run: --max-minutes {max_minutes:g} was spent")
    if plot_to is not None:
        Console().print(f"plot: {tuner.plot(points, chosen, latency_budget_ms, plot_to)}")
    if chosen is None:
        err.print(
            f"[red]no candidate kept p99 within {latency_budget_ms:g} ms; raise the budget or widen the grid[/red]"
        )
        raise typer.Exit(1)
    Console().print(f"chosen: {chosen.candidate.describe()}")
    if write:
        Console().print(f"wrote {tuner.write_config(model_repository, model, chosen.candidate)}")
