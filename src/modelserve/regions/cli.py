"""``modelserve regions``: replicate model versions between regional stores and read where they stand.

Every command reads the regions file (``--regions-file`` / REGIONS_FILE) and the jobs' database
(``--database-url`` / DATABASE_URL, the traffic history's). ``replicate`` plans jobs and, unless told
not to wait, runs them here until each is replicated or dead; ``serve`` is the replication service,
which replicates every version its source region publishes and serves the metrics.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from modelserve.regions.cost_cli import cost
from modelserve.regions.rollout import SKIPPED
from modelserve.regions.router_cli import failover, router_config
from modelserve.remote import AdminToken
from modelserve.rollout.cli import (
    Interval,
    LatencyWindows,
    MaxErrorRate,
    MaxLatencyRatio,
    MinSamples,
    Steps,
    parse_duration,
    request_body,
)
from modelserve.terminal import err

if TYPE_CHECKING:
    from modelserve.regions.service import Context

app = typer.Typer(
    help="Replicate model versions between regional model stores, and read their state (docs/REGIONS.md).",
    no_args_is_help=True,
)
app.command()(cost)
app.command("router-config")(router_config)
app.command()(failover)


def out() -> Console:
    """The console of one command, built when it prints so that it follows the terminal's width then."""
    return Console()


RegionsPath = Annotated[
    Path | None, typer.Option("--regions-file", envvar="REGIONS_FILE", help="The regions file (YAML).")
]
DatabaseURL = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        help="Database of the replication jobs; default: the traffic history's SQLite file in MODEL_CACHE_DIR.",
        show_default=False,
    ),
]
ModelId = Annotated[str, typer.Option("--model-id", "-m", help="A model's name, or name:version.")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def _context(regions_file: Path | None, database_url: str | None) -> Context:
    # Imported here: boto3 and the jobs' store are for these commands only, not for every `modelserve` call.
    from modelserve.regions.service import open_context

    try:
        return open_context(regions_file, database_url, owner=f"{socket.gethostname()}:{os.getpid()}")
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


@app.command()
def replicate(
    model_id: ModelId,
    source_region: Annotated[
        str | None, typer.Option(help="Region to copy from; default: the regions file's first by priority.")
    ] = None,
    target_regions: Annotated[
        str | None, typer.Option(help="Comma-separated regions to copy into; default: every other region.")
    ] = None,
    again: Annotated[
        bool,
        typer.Option(
            help="Run jobs that ended (replicated or dead) anew: each file whose copy is still the one published is "
            "kept, the rest copied again. --no-again leaves ended jobs as they are."
        ),
    ] = True,
    wait: Annotated[bool, typer.Option(help="Run the jobs here until each ends; --no-wait leaves them queued.")] = True,
    regions_file: RegionsPath = None,
    database_url: DatabaseURL = None,
) -> None:
    """Copy a model (every published version, or name:version) into other regions, verified, published last."""
    from modelserve.regions.service import ReplicationError, run_with_progress, split_model_id

    context = _context(regions_file, database_url)
    model, version = split_model_id(model_id)
    try:
        source = source_region or context.regions.names[0]
        targets = (
            [t.strip() for t in target_regions.split(",") if t.strip()]
            if target_regions
            else [n for n in context.regions.names if n != source]
        )
        if not targets:
            raise _fail("no target region: the regions file names only the source", 2)
        jobs = context.replicator.plan(model, version, source, targets, again=again)
    except (ReplicationError, ValueError) as exc:
        raise _fail(str(exc), 2) from None
    if not wait:
        out().print(
            f"queued {len(jobs)} job(s): {', '.join(f'{j.model}:{j.version} → {j.target_region}' for j in jobs)}"
        )
        return
    finished = run_with_progress(context, [j.id for j in jobs], out())
    _print_status(finished, as_json=False)
    if any(j.state != "replicated" for j in finished):
        raise typer.Exit(1)


@app.command()
def status(
    model_id: ModelId,
    as_json: AsJson = False,
    regions_file: RegionsPath = None,
    database_url: DatabaseURL = None,
) -> None:
    """Per target region: state, bytes done/total, attempts, retries, last error and lag of each version."""
    from modelserve.regions.service import split_model_id

    context = _context(regions_file, database_url)
    model, version = split_model_id(model_id)
    jobs = context.jobs.jobs(model, version)
    if not jobs:
        raise _fail(f"no replication job for {model_id}: start one with `modelserve regions replicate -m {model_id}`")
    _print_status(jobs, as_json)


@app.command()
def verify(
    model_id: ModelId,
    source_region: Annotated[str | None, typer.Option(help="The region whose SHA256SUMS is the truth.")] = None,
    target_regions: Annotated[str | None, typer.Option(help="Comma-separated regions; default: all.")] = None,
    as_json: AsJson = False,
    regions_file: RegionsPath = None,
    database_url: DatabaseURL = None,
) -> None:
    """Re-read every region's copy and compare it with the source's SHA256SUMS; exit 1 on any mismatch."""
    from modelserve.regions.service import ReplicationError, split_model_id
    from modelserve.regions.verifier import verify as run_verify

    context = _context(regions_file, database_url)
    model, version = split_model_id(model_id)
    source = source_region or context.regions.names[0]
    regions = [t.strip() for t in target_regions.split(",")] if target_regions else context.regions.names
    try:
        findings = run_verify(context.replicator, model, version, source, regions)
    except (ReplicationError, ValueError) as exc:
        raise _fail(str(exc), 2) from None
    bad = [f for f in findings if f.bad]
    if as_json:
        print(json.dumps([f.__dict__ | {"bad": f.bad} for f in findings], indent=1))
    else:
        table = Table("region", "version", "file", "status", "detail", title=f"{model}: checked against {source}")
        for f in findings:
            colour = "red" if f.bad else "green" if f.status == "ok" else "yellow"
            table.add_row(f.region, f.version, f.path, f"[{colour}]{f.status}[/{colour}]", f.detail)
        out().print(table)
        out().print(f"{len(findings) - len(bad)} of {len(findings)} file copies match; {len(bad)} mismatch(es)")
    if bad:
        raise typer.Exit(1)


@app.command()
def queue(as_json: AsJson = False, regions_file: RegionsPath = None, database_url: DatabaseURL = None) -> None:
    """Replication queue depth: jobs waiting or running, by state."""
    context = _context(regions_file, database_url)
    counts = context.jobs.counts()
    depth = counts["pending"] + counts["copying"] + counts["publishing"]
    if as_json:
        print(json.dumps({"queue_depth": depth, **counts}))
        return
    out().print(
        f"queue depth: {depth} (pending {counts['pending']}, copying {counts['copying']}, "
        f"publishing {counts['publishing']}); dead: {counts['dead']}; replicated: {counts['replicated']}"
    )


@app.command()
def pending(as_json: AsJson = False, regions_file: RegionsPath = None, database_url: DatabaseURL = None) -> None:
    """Jobs not replicated yet, largest lag first, and dead-lettered ones with their last error."""
    from modelserve.regions.jobs import pending_first
    from modelserve.regions.service import job_json

    context = _context(regions_file, database_url)
    jobs = [j for j in pending_first(context.jobs.jobs()) if j.state != "replicated"]
    if as_json:
        print(json.dumps([job_json(j, context.clock()) for j in jobs], indent=1))
        return
    if not jobs:
        out().print("nothing pending: every replication job is replicated")
        return
    table = Table("model", "version", "target", "state", "size", "attempts", "next try", "last error")
    now = context.clock()
    for job in jobs:
        retry = "-" if job.state == "dead" else f"in {max(0.0, job.next_attempt_at - now):.0f} s"
        table.add_row(
            job.model,
            job.version,
            job.target_region,
            _state(job.state),
            _mib(job.bytes_total),
            str(job.attempts),
            retry,
            job.last_error or "",
        )
    out().print(table)


@app.command()
def serve(
    source_region: Annotated[
        str | None, typer.Option(help="Region whose published versions are replicated; default: first by priority.")
    ] = None,
    interval: Annotated[float, typer.Option(min=1, help="Seconds between two looks at the source's models.")] = 30.0,
    host: Annotated[str, typer.Option(help="Address of the /metrics and /jobs endpoint.")] = "0.0.0.0",
    metrics_port: Annotated[int, typer.Option(help="Port of /metrics and /jobs; 0: none.")] = 9108,
    regions_file: RegionsPath = None,
    database_url: DatabaseURL = None,
) -> None:
    """The replication service: replicate every version the source publishes into every other region, forever."""
    from modelserve.regions.service import run_service

    context = _context(regions_file, database_url)
    source = source_region or context.regions.names[0]
    try:
        context.regions.region(source)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    run_service(context, source, interval, host, metrics_port)


@app.command()
def rollout(
    model: str,
    version: Annotated[int, typer.Option(min=1, help="The version to roll out, published in the source region.")],
    regions: Annotated[
        str | None,
        typer.Option(help="Comma-separated regions, in the order they get the version; default: all, by priority."),
    ] = None,
    source_region: Annotated[
        str | None, typer.Option(help="Region the version is published in; default: first by priority.")
    ] = None,
    steps: Steps = "1,10,50,100",
    interval: Interval = "60s",
    max_error_rate: MaxErrorRate = "1%",
    max_latency_ratio: MaxLatencyRatio = 1.5,
    min_samples: MinSamples = 100,
    latency_windows: LatencyWindows = 1,
    timeout: Annotated[
        str | None, typer.Option(help="Give up (aborting the region's rollouts) after this long: 2h, 30m.")
    ] = None,
    token: AdminToken = None,
    as_json: AsJson = False,
    regions_file: RegionsPath = None,
    database_url: DatabaseURL = None,
) -> None:
    """Replicate a version into every region, then roll it out on each region's servers in turn: the next
    region only after promotion, none after a rollback. Exit 0 when every server promoted it."""
    from modelserve.regions.rollout import RolloutError, ServerRollout, walk
    from modelserve.regions.service import ReplicationError, run_with_progress

    body = request_body(version, steps, interval, max_error_rate, max_latency_ratio, min_samples, latency_windows)
    context = _context(regions_file, database_url)
    try:
        order = [r.strip() for r in regions.split(",") if r.strip()] if regions else context.regions.names
        chosen = [context.regions.region(name) for name in order]
        source = source_region or context.regions.names[0]
        targets = [name for name in order if name != source]
        jobs = context.replicator.plan(model, str(version), source, targets) if targets else []
    except (ReplicationError, ValueError) as exc:
        raise _fail(str(exc), 2) from None
    if jobs:
        finished = run_with_progress(context, [j.id for j in jobs], out() if not as_json else err)
        if unreplicated := [j for j in finished if j.state != "replicated"]:
            _print_status(unreplicated, as_json=False)
            raise _fail(f"{model}:{version} is not replicated everywhere: no region gets it")

    def shown(server: ServerRollout) -> None:
        if not as_json:
            detail = f" ({server.reason})" if server.reason else ""
            err.print(
                f"{server.region} {server.endpoint}: {server.state} at {server.weight} %{detail}",
                markup=False,
                highlight=False,
            )

    try:
        servers = walk(
            chosen,
            model,
            body,
            token=token,
            on_change=shown,
            poll_s=min(body["interval_s"], 2.0),
            timeout_s=parse_duration(timeout) if timeout else None,
        )
    except RolloutError as exc:
        raise _fail(f"stopped: {exc}") from None
    if as_json:
        print(json.dumps([s.as_json() for s in servers], indent=1))
    else:
        table = Table("region", "server", "state", "share", "took", "reason", title=f"{model}: version {version}")
        for server in servers:
            took = (
                f"{server.finished_at - server.started_at:.1f} s"
                if server.started_at is not None and server.finished_at is not None
                else "-"
            )
            colour = {"promoted": "green", SKIPPED: "yellow"}.get(server.state, "red")
            table.add_row(
                server.region,
                server.endpoint,
                f"[{colour}]{server.state}[/{colour}]",
                f"{server.weight} %",
                took,
                server.reason,
            )
        out().print(table)
    if any(s.state != "promoted" for s in servers):
        raise typer.Exit(1)


def _print_status(jobs: list[Any], as_json: bool) -> None:
    import time

    from modelserve.regions.service import job_json

    now = time.time()
    if as_json:
        print(json.dumps([job_json(j, now) for j in jobs], indent=1))
        return
    table = Table("model", "version", "source", "target", "state", "bytes", "attempts", "retries", "lag", "last error")
    for job in jobs:
        table.add_row(
            job.model,
            job.version,
            job.source_region,
            job.target_region,
            _state(job.state),
            f"{_mib(job.bytes_done)} / {_mib(job.bytes_total)}",
            str(job.attempts),
            str(job.retries),
            f"{job.lag_s(now):.0f} s",
            job.last_error or "",
        )
    out().print(table)


def _state(state: str) -> str:
    colour = {"replicated": "green", "dead": "red"}.get(state, "yellow")
    return f"[{colour}]{state}[/{colour}]"


def _mib(nbytes: int) -> str:
    return f"{nbytes / 1048576:.1f} MiB" if nbytes >= 1048576 else f"{nbytes} B"
