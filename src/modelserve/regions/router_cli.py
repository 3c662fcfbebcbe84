"""``modelserve regions router-config`` and ``modelserve regions failover``: the router's configuration,
and planned moves of a region's traffic through its runtime API (docs/REGIONS.md#routing-and-failover)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelserve.regions.config import RegionsFile, RegionsFileError, load_regions
from modelserve.regions.router import DEFAULT_SOCKET, RouterSettings, render
from modelserve.terminal import err

DEFAULTS = RouterSettings()  # the options' defaults are the settings', so the two never drift apart

RegionsPath = Annotated[
    Path | None, typer.Option("--regions-file", envvar="REGIONS_FILE", help="The regions file (YAML).")
]
RuntimeSocket = Annotated[
    str,
    typer.Option(
        "--runtime-api",
        envvar="ROUTER_RUNTIME_API",
        help="HAProxy's runtime API: its stats socket's path, or host:port.",
    ),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


def _regions(path: Path | None) -> RegionsFile:
    from modelserve.config import Settings

    path = path or Settings().regions_file
    if path is None:
        raise _fail("no regions file: pass --regions-file PATH or set REGIONS_FILE (docs/REGIONS.md)", 2)
    try:
        return load_regions(path)
    except RegionsFileError as exc:
        raise _fail(str(exc), 2) from None


def haproxy_binary() -> str | None:
    """``haproxy`` on PATH, else the one `make tools` unpacks into the checkout's .tools."""
    unpacked = Path.cwd() / ".tools" / "root" / "usr" / "sbin" / "haproxy"
    return shutil.which("haproxy") or (str(unpacked) if unpacked.exists() else None)


def haproxy_env(binary: str) -> dict[str, str]:
    """The environment ``binary`` runs in: an unpacked one finds its libraries beside it."""
    libraries = Path(binary).parents[1] / "lib" / "x86_64-linux-gnu"
    if libraries.is_dir() and ".tools" in binary:
        return {**os.environ, "LD_LIBRARY_PATH": str(libraries)}
    return dict(os.environ)


def router_config(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write; default: stdout.")] = None,
    runtime_api: Annotated[
        Path, typer.Option("--runtime-socket", envvar="ROUTER_RUNTIME_API", help="Path of the runtime API socket.")
    ] = DEFAULTS.runtime_socket,
    bind_host: Annotated[str, typer.Option(help="Address the router listens on.")] = DEFAULTS.bind_host,
    http_port: Annotated[int, typer.Option(help="HTTP port (Open Inference Protocol and /v1).")] = DEFAULTS.http_port,
    grpc_port: Annotated[int, typer.Option(help="gRPC (h2) port; 0: none.")] = DEFAULTS.grpc_port,
    metrics_port: Annotated[
        int, typer.Option(help="Port of HAProxy's /metrics and /stats; 0: none.")
    ] = DEFAULTS.metrics_port,
    connect_timeout_ms: Annotated[
        int, typer.Option(envvar="ROUTER_CONNECT_TIMEOUT_MS", min=1)
    ] = DEFAULTS.connect_timeout_ms,
    server_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="ROUTER_SERVER_TIMEOUT_SEC",
            help="Seconds one try may wait for a server's answer before it is tried on another; "
            "default: REQUEST_TIMEOUT_SEC.",
            show_default=False,
        ),
    ] = None,
    check_interval_ms: Annotated[
        int, typer.Option(envvar="ROUTER_CHECK_INTERVAL_MS", min=10)
    ] = DEFAULTS.check_interval_ms,
    check_timeout_ms: Annotated[
        int, typer.Option(envvar="ROUTER_CHECK_TIMEOUT_MS", min=10)
    ] = DEFAULTS.check_timeout_ms,
    fall: Annotated[int, typer.Option(min=1, help="Failed checks in a row that mark a server down.")] = DEFAULTS.fall,
    rise: Annotated[int, typer.Option(min=1, help="Passed checks in a row that mark it up again.")] = DEFAULTS.rise,
    error_limit: Annotated[
        int, typer.Option(min=1, help="Errors in a row in live traffic that mark it down.")
    ] = DEFAULTS.error_limit,
    retries: Annotated[
        int, typer.Option(min=0, help="Tries of a request after its first, on other servers.")
    ] = DEFAULTS.retries,
    client_map: Annotated[
        Path | None, typer.Option(help="'CIDR region' lines: the region of a client that sends no X-Client-Region.")
    ] = None,
    check: Annotated[bool, typer.Option(help="Run `haproxy -c` on the configuration.")] = True,
    regions_file: RegionsPath = None,
) -> None:
    """Write the HAProxy configuration of the regions: a backend per region, health checks, priorities, retries."""
    from modelserve.config import Settings

    regions = _regions(regions_file)
    settings = RouterSettings(
        runtime_socket=runtime_api,
        bind_host=bind_host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        connect_timeout_ms=connect_timeout_ms,
        server_timeout_s=server_timeout or Settings().request_timeout_sec,
        check_interval_ms=check_interval_ms,
        check_timeout_ms=check_timeout_ms,
        fall=fall,
        rise=rise,
        error_limit=error_limit,
        retries=retries,
        client_map=client_map,
    )
    try:
        text = render(regions, settings)
    except RegionsFileError as exc:
        raise _fail(str(exc), 2) from None
    if check:
        _check(text)
    if output is None:
        print(text)
    else:
        output.write_text(text)
        err.print(f"wrote {output}", highlight=False)


def _check(text: str) -> None:
    binary = haproxy_binary()
    if binary is None:
        raise _fail("haproxy is not installed (apt-get install haproxy, or `make tools`); --no-check skips the check")
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as handle:
        handle.write(text)
        handle.flush()
        result = subprocess.run(
            [binary, "-c", "-q", "-f", handle.name],
            env=haproxy_env(binary),
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise _fail(f"haproxy -c refuses the configuration:\n{result.stdout}{result.stderr}")


def failover(
    from_region: Annotated[str, typer.Option("--from-region", help="The region whose traffic moves.")],
    to_region: Annotated[str, typer.Option("--to-region", help="The region that takes it.")],
    back: Annotated[bool, typer.Option("--back", help="Give --from-region its traffic back.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Move even when the target is not ready or lacks a version.")
    ] = False,
    drain_timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait for the source's sessions.")] = 30.0,
    runtime_api: RuntimeSocket = str(DEFAULT_SOCKET),
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    regions_file: RegionsPath = None,
) -> None:
    """Move a region's traffic to another through the router (drain, wait for its sessions, maintenance)."""
    from modelserve.regions import failover as moves
    from modelserve.regions.runtime import RuntimeAPI, RuntimeAPIError

    regions = _regions(regions_file)
    api = RuntimeAPI(runtime_api)
    try:
        if back:
            report = moves.restore(regions, api, from_region, force=force)
        else:
            report = moves.failover(regions, api, from_region, to_region, force=force, drain_timeout_s=drain_timeout)
    except moves.FailoverRefused as exc:
        raise _fail(f"refused: {exc}") from None
    except (RuntimeAPIError, RegionsFileError) as exc:
        raise _fail(str(exc), 2) from None
    if as_json:
        print(json.dumps({"steps": [asdict(s) for s in report.steps], "seconds": round(report.seconds, 3)}, indent=1))
        return
    title = f"{from_region} → {to_region}" if not back else f"{from_region} restored"
    table = Table("step", "took", "detail", title=title)
    for step in report.steps:
        table.add_row(step.name, f"{step.seconds * 1000:.0f} ms", step.detail)
    Console().print(table)
    Console().print(f"done in {report.seconds:.2f} s", highlight=False)
