"""The ``modelserve`` command: ``serve`` runs the server; ``models``, ``profile``, ``warmup`` and ``bench``
work on a running one; ``convert`` readies a model for it; ``prewarm`` replays traffic traces against
the pre-warming policies."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.table import Table

from modelserve.bench.tune_cli import tune
from modelserve.bench.warmup import error_of
from modelserve.config import ModelControlMode, PrewarmPolicy, Settings, describe_error, unknown_variables
from modelserve.convert.cli import convert
from modelserve.observability.logging import configure_logging
from modelserve.observability.profiling import ProfileFormat
from modelserve.observability.tracing import otlp_protocol
from modelserve.prewarm.cli import app as prewarm_app
from modelserve.regions.cli import app as regions_app
from modelserve.remote import URL, Token, auth, call
from modelserve.rollout.cli import app as rollout_app
from modelserve.terminal import err

app = typer.Typer(help="modelserve: a fast Open Inference Protocol (KServe V2) model server.", no_args_is_help=True)
models_app = typer.Typer(help="List, load and unload the models of a running server.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.command()(convert)
app.command()(tune)
app.add_typer(prewarm_app, name="prewarm")
app.add_typer(regions_app, name="regions")
app.add_typer(rollout_app, name="rollout")


def _help(field: str) -> str:
    description = Settings.model_fields[field].description or ""
    return f"{description} \\[env: {Settings.env_name(field)}]"  # escaped: Rich reads [..] as markup


@app.command()
def serve(
    model_repository: Annotated[str | None, typer.Option(help=_help("model_repository"))] = None,
    host: Annotated[str | None, typer.Option(help=_help("host"))] = None,
    http_port: Annotated[int | None, typer.Option(help=_help("http_port"))] = None,
    grpc_port: Annotated[int | None, typer.Option(help=_help("grpc_port"))] = None,
    grpc_keepalive_time_ms: Annotated[int | None, typer.Option(help=_help("grpc_keepalive_time_ms"))] = None,
    grpc_keepalive_timeout_ms: Annotated[int | None, typer.Option(help=_help("grpc_keepalive_timeout_ms"))] = None,
    workers: Annotated[int | None, typer.Option(help=_help("workers"))] = None,
    model_control_mode: Annotated[ModelControlMode | None, typer.Option(help=_help("model_control_mode"))] = None,
    repository_poll_secs: Annotated[float | None, typer.Option(help=_help("repository_poll_secs"))] = None,
    load_model: Annotated[
        list[str] | None, typer.Option("--load-model", help=_help("load_models") + " Repeatable.")
    ] = None,
    model_cache_dir: Annotated[Path | None, typer.Option(help=_help("model_cache_dir"))] = None,
    model_load_timeout: Annotated[float | None, typer.Option(help=_help("model_load_timeout"))] = None,
    inference_threads: Annotated[int | None, typer.Option(help=_help("inference_threads"))] = None,
    max_batch_size: Annotated[int | None, typer.Option(help=_help("max_batch_size"))] = None,
    batch_timeout_ms: Annotated[float | None, typer.Option(help=_help("batch_timeout_ms"))] = None,
    max_queue_size: Annotated[int | None, typer.Option(help=_help("max_queue_size"))] = None,
    inline_inference_us: Annotated[float | None, typer.Option(help=_help("inline_inference_us"))] = None,
    request_timeout_sec: Annotated[float | None, typer.Option(help=_help("request_timeout_sec"))] = None,
    max_num_seqs: Annotated[int | None, typer.Option(help=_help("max_num_seqs"))] = None,
    quantization: Annotated[str | None, typer.Option(help=_help("quantization"))] = None,
    vllm_gpu_memory_utilization: Annotated[
        float | None, typer.Option(help=_help("vllm_gpu_memory_utilization"))
    ] = None,
    max_input_size_mb: Annotated[float | None, typer.Option(help=_help("max_input_size_mb"))] = None,
    max_inflight_requests: Annotated[int | None, typer.Option(help=_help("max_inflight_requests"))] = None,
    response_cache_mb: Annotated[float | None, typer.Option(help=_help("response_cache_mb"))] = None,
    grpc_stream_max_inflight: Annotated[int | None, typer.Option(help=_help("grpc_stream_max_inflight"))] = None,
    circuit_breaker_failures: Annotated[int | None, typer.Option(help=_help("circuit_breaker_failures"))] = None,
    circuit_breaker_cooldown_sec: Annotated[
        float | None, typer.Option(help=_help("circuit_breaker_cooldown_sec"))
    ] = None,
    prewarm_policy: Annotated[PrewarmPolicy | None, typer.Option(help=_help("prewarm_policy"))] = None,
    model_memory_budget_mb: Annotated[float | None, typer.Option(help=_help("model_memory_budget_mb"))] = None,
    model_memory_budget_fraction: Annotated[
        float | None, typer.Option(help=_help("model_memory_budget_fraction"))
    ] = None,
    gpu_memory_fraction: Annotated[float | None, typer.Option(help=_help("gpu_memory_fraction"))] = None,
    memory_soft_limit_mb: Annotated[float | None, typer.Option(help=_help("memory_soft_limit_mb"))] = None,
    memory_hard_limit_mb: Annotated[float | None, typer.Option(help=_help("memory_hard_limit_mb"))] = None,
    shutdown_grace_sec: Annotated[float | None, typer.Option(help=_help("shutdown_grace_sec"))] = None,
    log_level: Annotated[str | None, typer.Option(help=_help("log_level"))] = None,
    log_format: Annotated[str | None, typer.Option(help=_help("log_format"))] = None,
    access_log_sample_rate: Annotated[float | None, typer.Option(help=_help("access_log_sample_rate"))] = None,
    trace_sample_rate: Annotated[float | None, typer.Option(help=_help("trace_sample_rate"))] = None,
    api_keys: Annotated[str | None, typer.Option(help=_help("api_keys") + " Prefer the variable or a file.")] = None,
    jwt_secret: Annotated[str | None, typer.Option(help=_help("jwt_secret") + " Prefer the variable.")] = None,
    jwt_public_key_file: Annotated[Path | None, typer.Option(help=_help("jwt_public_key_file"))] = None,
    jwt_jwks_file: Annotated[Path | None, typer.Option(help=_help("jwt_jwks_file"))] = None,
    jwt_issuer: Annotated[str | None, typer.Option(help=_help("jwt_issuer"))] = None,
    jwt_audience: Annotated[str | None, typer.Option(help=_help("jwt_audience"))] = None,
    auth_open_endpoints: Annotated[str | None, typer.Option(help=_help("auth_open_endpoints"))] = None,
    traffic_history: Annotated[bool | None, typer.Option(help=_help("traffic_history"))] = None,
    database_url: Annotated[
        str | None, typer.Option(help=_help("database_url") + " Prefer the variable when it holds a password.")
    ] = None,
    history_bucket_sec: Annotated[int | None, typer.Option(help=_help("history_bucket_sec"))] = None,
    history_flush_interval_sec: Annotated[float | None, typer.Option(help=_help("history_flush_interval_sec"))] = None,
    history_retention_days: Annotated[float | None, typer.Option(help=_help("history_retention_days"))] = None,
    db_pool_size: Annotated[int | None, typer.Option(help=_help("db_pool_size"))] = None,
    db_max_overflow: Annotated[int | None, typer.Option(help=_help("db_max_overflow"))] = None,
    region: Annotated[str | None, typer.Option(help=_help("region"))] = None,
    prices_file: Annotated[Path | None, typer.Option(help=_help("prices_file"))] = None,
    cost_refresh_sec: Annotated[float | None, typer.Option(help=_help("cost_refresh_sec"))] = None,
    regions_file: Annotated[Path | None, typer.Option(help=_help("regions_file"))] = None,
    probe_model: Annotated[str | None, typer.Option(help=_help("probe_model"))] = None,
    probe_interval_sec: Annotated[float | None, typer.Option(help=_help("probe_interval_sec"))] = None,
    probe_timeout_sec: Annotated[float | None, typer.Option(help=_help("probe_timeout_sec"))] = None,
) -> None:
    """Serve a model repository over HTTP (Open Inference Protocol and the /v1 API) and gRPC."""
    options: dict[str, Any] = {k: v for k, v in locals().items() if v is not None}
    if "load_model" in options:
        options["load_models"] = options.pop("load_model")
    try:
        settings = Settings.from_options(**options)
    except ValidationError as exc:
        err.print(f"[red]{describe_error(exc)}[/red]")
        raise typer.Exit(2) from None
    try:
        otlp_protocol(os.environ)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if not settings.model_repository:
        err.print(
            "[red]no model repository: pass --model-repository PATH, or set MODEL_REPOSITORY "
            "(or MODEL_CACHE_DIR alone)[/red]"
        )
        raise typer.Exit(2)
    if "://" not in settings.model_repository and not Path(settings.model_repository).is_dir():
        err.print(f"[red]model repository {settings.model_repository} does not exist or is not a directory[/red]")
        raise typer.Exit(2)
    _run(settings)


def _run(settings: Settings) -> None:
    import uvicorn

    configure_logging(settings.log_level, settings.log_format)
    for warning in unknown_variables(os.environ):
        logging.getLogger("modelserve.config").warning(warning)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.http_port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": settings.log_level,
        "log_config": None,  # uvicorn's loggers go through configure_logging's pipeline
        "access_log": False,  # modelserve writes its own access lines (ACCESS_LOG_SAMPLE_RATE)
        # Requests have drained by the time uvicorn shuts down; server/lifecycle.py then lowers this bound
        # on uvicorn's own wait to what is left of the grace.
        "timeout_graceful_shutdown": settings.shutdown_grace_sec,
    }
    if settings.workers == 1:
        from modelserve.server.app import create_app

        uvicorn.run(create_app(settings), **common)
        return
    # Worker processes rebuild the settings from the environment, so export what the options set.
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        else:
            text = ",".join(value) if isinstance(value, list) else str(value)
        os.environ[Settings.env_name(name)] = text
    # Each worker writes its metric values where any of them can read all of them for a scrape.
    with tempfile.TemporaryDirectory(prefix="modelserve-metrics-") as shared:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", shared)
        uvicorn.run("modelserve.server.app:create_app_from_env", factory=True, workers=settings.workers, **common)


@models_app.command("list")
def list_models(url: URL = "http://127.0.0.1:8000", token: Token = None) -> None:
    """Every model in the server's repository, with its versions and state."""
    table = Table("model", "version", "state", "reason")
    for entry in call("POST", f"{url}/v2/repository/index", token):
        table.add_row(entry["name"], entry.get("version", "-"), entry["state"], entry.get("reason", ""))
    Console().print(table)


@models_app.command("load")
def load_model_command(name: str, url: URL = "http://127.0.0.1:8000", token: Token = None) -> None:
    """Load (or reload) a model from the server's repository."""
    body = call("POST", f"{url}/v1/models/{name}/load", token)
    Console().print(
        f"loaded {name} ({body['format']}) versions {', '.join(body['versions'])} in {body['load_time_seconds']} s"
    )


@models_app.command("unload")
def unload_model_command(name: str, url: URL = "http://127.0.0.1:8000", token: Token = None) -> None:
    """Unload a model once its queued requests finish."""
    call("POST", f"{url}/v1/models/{name}/unload", token)
    Console().print(f"unloaded {name}")


@app.command()
def profile(
    url: URL = "http://127.0.0.1:8000",
    seconds: Annotated[float, typer.Option(min=0.1, max=60, help="How long to record.")] = 10.0,
    hz: Annotated[int, typer.Option(min=1, max=1000, help="Samples per second, per thread.")] = 100,
    fmt: Annotated[ProfileFormat, typer.Option("--format", help="svg, speedscope or folded.")] = ProfileFormat.svg,
    idle: Annotated[bool, typer.Option(help="Keep the samples of threads that wait.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write; a name is made up.")] = None,
    token: Token = None,
) -> None:
    """Record a running server's CPU for N seconds and save a flame graph (GET /debug/profile)."""
    target = output or Path(f"modelserve-profile-{time.strftime('%Y%m%dT%H%M%S')}.{fmt.extension}")
    params = {"seconds": seconds, "hz": hz, "format": fmt.value, "idle": idle}
    try:
        response = httpx.get(f"{url}/debug/profile", params=params, headers=auth(token), timeout=seconds + 30)
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach {url}: {exc}[/red]")
        raise typer.Exit(1) from None
    if response.status_code != 200:
        err.print(f"[red]{response.status_code}: {error_of(response)}[/red]")
        raise typer.Exit(1)
    target.write_bytes(response.content)
    hint = " (open it at https://www.speedscope.app)" if fmt is ProfileFormat.speedscope else ""
    Console().print(f"wrote {target}{hint}")


@app.command()
def warmup(
    url: URL = "http://127.0.0.1:8000",
    models: Annotated[
        list[str] | None,
        typer.Option("--models", "--model", help="Models to warm, comma-separated or repeated; default: all READY."),
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="Requests per model.")] = 5,
    batch: Annotated[int, typer.Option(min=1, help="Samples per request.")] = 1,
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for the server to be ready.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model instead of a table.")] = False,
    token: Token = None,
) -> None:
    """Warm the models of a running server with requests built from their metadata; report latencies."""
    import json

    from modelserve.bench.warmup import ready_models, wait_until_ready, warm

    with httpx.Client(base_url=url, headers=auth(token), timeout=300) as client:
        if not wait_until_ready(client, wait):
            err.print(f"[red]{url} was not ready within {wait:g} s (GET /v2/health/ready)[/red]")
            raise typer.Exit(1)
        try:
            names = [n for item in models for n in item.split(",") if n] if models else ready_models(client)
        except httpx.HTTPStatusError as exc:
            err.print(f"[red]{exc.response.status_code}: {error_of(exc.response)}[/red]")
            raise typer.Exit(1) from None
        results = [warm(client, name, count, batch) for name in names]
    table = Table("model", "requests", "first ms", "median ms", "error")
    for result in results:
        row = {
            "model": result.model,
            "requests": len(result.latencies_ms),
            "first_ms": round(result.first_ms, 3),
            "median_ms": round(result.median_ms, 3),
            "error": result.error,
        }
        if as_json:
            print(json.dumps(row), flush=True)
        else:
            table.add_row(*(str(value) for value in row.values()))
    if not as_json:
        Console().print(table if results else "no model is READY: nothing to warm")
    if any(result.error for result in results):
        raise typer.Exit(1)


@app.command()
def bench(
    model: str,
    url: URL = "http://127.0.0.1:8000",
    grpc_address: Annotated[str, typer.Option(help="host:port of the server's gRPC endpoint.")] = "127.0.0.1:8001",
    protocol: Annotated[list[str] | None, typer.Option(help="http-json, http-binary or grpc; repeatable.")] = None,
    concurrency: Annotated[list[int] | None, typer.Option(help="Concurrent clients; repeatable.")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Samples per request.")] = 1,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds measured per point.")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of load before measuring.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per point instead of a table.")] = False,
    token: Token = None,
) -> None:
    """Load a running server with closed-loop clients; report inferences/s and latency percentiles."""
    import json

    import uvloop

    from modelserve.bench.loadgen import run_load
    from modelserve.bench.workload import PROTOCOLS, Workload

    protocols = protocol or ["http-binary"]
    if unknown := [p for p in protocols if p not in PROTOCOLS]:
        err.print(f"[red]unknown protocol {', '.join(unknown)}; choose from {', '.join(PROTOCOLS)}[/red]")
        raise typer.Exit(2)
    try:
        workload = Workload.from_server(url, model, batch, token=token)
    except httpx.HTTPStatusError as exc:
        err.print(f"[red]{exc.response.status_code}: {error_of(exc.response)}[/red]")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach {url}: {exc}[/red]")
        raise typer.Exit(1) from None
    table = Table("protocol", "clients", "inf/s", "p50 ms", "p90 ms", "p99 ms", "errors")
    for name in protocols:
        for clients in concurrency or [1, 8, 32]:
            target = workload.target(name, url, grpc_address)
            result = uvloop.run(run_load(target, clients, duration, warmup_s=warmup, samples_per_request=batch))
            point = {
                "model": model,
                "protocol": name,
                "clients": clients,
                "batch": batch,
                "inferences_per_second": round(result.inferences_per_second, 1),
                "p50_ms": round(result.percentile_ms(50), 3),
                "p90_ms": round(result.percentile_ms(90), 3),
                "p99_ms": round(result.percentile_ms(99), 3),
                "errors": result.errors,
            }
            if as_json:
                print(json.dumps(point), flush=True)
            else:
                table.add_row(
                    *(
                        str(point[k])
                        for k in (
                            "protocol",
                            "clients",
                            "inferences_per_second",
                            "p50_ms",
                            "p90_ms",
                            "p99_ms",
                            "errors",
                        )
                    )
                )
    if not as_json:
        Console().print(table)
