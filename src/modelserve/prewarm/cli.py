"""``modelserve prewarm``: generate traces and replay them against the pre-warming policies, and show what a
running server's policy plans."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelserve.prewarm.generators import FAMILIES, Shape, generate, held_out
from modelserve.prewarm.live import POLICIES
from modelserve.prewarm.policy import ModelInfo
from modelserve.prewarm.simulator import Result, simulate
from modelserve.prewarm.traces import (
    Trace,
    TraceFormatError,
    read_azure,
    read_models,
    read_trace,
    write_models,
    write_trace,
)
from modelserve.remote import DEFAULT_URL, URL, AdminToken, call
from modelserve.terminal import err

app = typer.Typer(help="Replay traffic traces against pre-warming policies (docs/PREWARM.md).", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]{message}[/red]")
    return typer.Exit(2)


def _policies(names: list[str]) -> list[str]:
    chosen = list(POLICIES) if "all" in names else names
    if unknown := [n for n in chosen if n not in POLICIES]:
        raise _fail(f"unknown policy {', '.join(unknown)}; choose from {', '.join(POLICIES)} or all")
    return list(dict.fromkeys(chosen))


def _load(trace: Path | None, azure: list[Path] | None, azure_by: str, azure_top: int | None) -> Trace:
    if (trace is None) == (not azure):
        raise _fail("give one of --trace FILE or --azure FILE (repeat --azure for several days)")
    try:
        return read_trace(trace) if trace is not None else read_azure(azure or [], by=azure_by, top=azure_top)
    except (OSError, TraceFormatError, ValueError) as exc:
        raise _fail(str(exc)) from None


@app.command("simulate")
def simulate_command(
    models: Annotated[Path, typer.Option(help="CSV model,size_mb,load_seconds.")],
    memory_budget_mb: Annotated[float, typer.Option(help="Memory for READY and loading models together, in MB.")],
    trace: Annotated[Path | None, typer.Option(help="CSV timestamp,model (seconds, any start).")] = None,
    azure: Annotated[
        list[Path] | None,
        typer.Option(help="An Azure Functions 2019 invocations_per_function file; repeat for more days, in order."),
    ] = None,
    azure_by: Annotated[
        str, typer.Option(help="Name Azure models after their 'function' or their 'app'.")
    ] = "function",
    azure_top: Annotated[int | None, typer.Option(min=1, help="Keep only the N Azure models requested most.")] = None,
    policy: Annotated[
        list[str] | None, typer.Option(help="lru, hybrid-histogram, predictive or all; repeatable.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object with a result per policy.")] = False,
    gpu_memory_budget_mb: Annotated[
        float, typer.Option(min=0, help="GPU memory for the models whose device is gpu in the models file, in MB.")
    ] = 0.0,
) -> None:
    """Replay a trace under each policy with the same memory budget; report cold starts and memory-time."""
    names = _policies(policy or ["all"])
    arrivals = _load(trace, azure, azure_by, azure_top)
    try:
        catalogue = read_models(models)
    except (OSError, TraceFormatError) as exc:
        raise _fail(str(exc)) from None
    results: list[Result] = []
    elapsed: dict[str, float] = {}
    for name in names:
        started = time.perf_counter()
        try:
            results.append(simulate(arrivals, catalogue, memory_budget_mb, POLICIES[name](), gpu_memory_budget_mb))
        except ValueError as exc:
            raise _fail(str(exc)) from None
        elapsed[name] = time.perf_counter() - started
    if as_json:
        budgets = {"memory_budget_mb": memory_budget_mb, "gpu_memory_budget_mb": gpu_memory_budget_mb}
        print(json.dumps({**budgets, "results": [r.as_dict() for r in results]}))
        return
    _print(results, elapsed, memory_budget_mb, gpu_memory_budget_mb)


def _print(results: list[Result], elapsed: dict[str, float], budget: float, gpu_budget: float) -> None:
    gpu = ["GPU GB·h", "GPU idle GB·h"] if gpu_budget else []
    title = f"memory budget {budget:g} MB" + (f", GPU {gpu_budget:g} MB" if gpu_budget else "")
    table = Table(
        "policy",
        "requests",
        "cold starts",
        "cold rate",
        "memory GB·h",
        "idle GB·h",
        *gpu,
        "loads",
        "evictions",
        "delay p50 s",
        "delay p99 s",
        "replay s",
        title=title,
    )
    for r in results:
        on_gpu = [f"{r.gpu_memory_mb_seconds / 3.6e6:.1f}", f"{r.gpu_idle_memory_mb_seconds / 3.6e6:.1f}"]
        table.add_row(
            r.policy,
            str(r.requests),
            str(r.cold_starts),
            f"{r.cold_start_rate:.4f}",
            f"{r.memory_mb_seconds / 3.6e6:.1f}",
            f"{r.idle_memory_mb_seconds / 3.6e6:.1f}",
            *(on_gpu if gpu_budget else []),
            str(r.loads),
            str(r.evictions),
            f"{r.cold_start_delay_p50_s:.2f}",
            f"{r.cold_start_delay_p99_s:.2f}",
            f"{elapsed[r.policy]:.1f}",
        )
    Console().print(table)


@app.command("generate")
def generate_command(
    family: Annotated[str, typer.Argument(help=f"One of {', '.join(FAMILIES)}.")],
    out: Annotated[Path, typer.Option(help="Folder to write trace.csv and models.csv into.")],
    seed: Annotated[int, typer.Option(help="Seed of the random generator.")] = 0,
    models: Annotated[int, typer.Option(min=1, help="How many models.")] = 100,
    days: Annotated[float, typer.Option(min=0.01, help="How long the trace lasts.")] = 7.0,
    held_out_shape: Annotated[
        bool, typer.Option("--held-out", help="Use the held-out parameters, not the tuning ones.")
    ] = False,
) -> None:
    """Write a synthetic trace family (trace.csv) and its models (models.csv), the same for the same seed."""
    try:
        arrivals, catalogue = generate(
            family, seed=seed, models=models, days=days, shape=held_out(Shape()) if held_out_shape else Shape()
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    write_trace(arrivals, out / "trace.csv")
    write_models(catalogue, out / "models.csv")
    Console().print(
        f"wrote {len(arrivals)} arrivals of {len(catalogue)} models to {out}; "
        f"the models need {_total(catalogue):.0f} MB together"
    )


def _total(catalogue: dict[str, ModelInfo]) -> float:
    return sum(m.size_mb for m in catalogue.values())


@app.command("plan")
def plan_command(
    url: URL = DEFAULT_URL,
    token: AdminToken = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The API's JSON (GET /v2/prewarm) instead of tables.")
    ] = False,
) -> None:
    """What a running server's pre-warming policy plans next, did last and why, and what it was worth against
    lru on the same requests (GET /v2/prewarm)."""
    report = call("GET", f"{url}/v2/prewarm", token)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    out = Console()
    if report["policy"] == "none":
        out.print(
            "pre-warming is off: start the server with PREWARM_POLICY=predictive (on-demand mode, a memory budget)"
        )
        return
    out.print(
        f"policy {report['policy']}: {report['used_mb']:.0f} of {report['budget_mb']:.0f} MB in use"
        + (f", GPU {report['gpu_used_mb']:.0f} of {report['gpu_budget_mb']:.0f} MB" if report["gpu_budget_mb"] else "")
        + "; "
        f"cold starts {report['cold_starts']}, lru's on the same requests {report['lru_cold_starts']} "
        f"(avoided {report['cold_starts_avoided']}); pre-loads unused {report['unused_loads']}",
        markup=False,
        highlight=False,
    )
    if report["learning"]:
        out.print("still learning from the traffic history: nothing is planned until it is done")
    planned = Table("in", "action", "model", "reason", title="planned, soonest first")
    for step in report["planned"]:
        planned.add_row(_seconds(step["in_seconds"]), step["action"], step["model"], step["reason"])
    taken = Table("ago", "action", "model", "outcome", "reason", title="last decisions, latest first")
    for step in report["decisions"]:
        taken.add_row(_seconds(-step["in_seconds"]), step["action"], step["model"], step["outcome"], step["reason"])
    models = Table(
        "model",
        "loaded",
        "MB",
        "pattern",
        "next request in",
        "cold",
        "lru cold",
        "avoided",
        "unused loads",
        title="models",
    )
    for model in report["models"]:
        models.add_row(
            model["model"],
            "yes" if model["loaded"] else "no",
            f"{model['size_mb']:.0f}" + (" (GPU)" if model["device"] == "gpu" else ""),
            model["pattern"],
            "-" if model["in_seconds"] is None else _seconds(model["in_seconds"]),
            str(model["cold_starts"]),
            str(model["lru_cold_starts"]),
            str(model["cold_starts_avoided"]),
            str(model["unused_loads"]),
        )
    for table in (planned, taken, models):
        out.print(table)


def _seconds(seconds: float) -> str:
    """A span as an operator reads it: 42 s, 7.5 min, 3.2 h."""
    if abs(seconds) < 120:
        return f"{seconds:.0f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
