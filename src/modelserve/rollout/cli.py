"""``modelserve rollout``: start, watch, pause, resume and abort a progressive rollout on a running server.

Every command is a call to the server's rollout API (docs/API.md#progressive-rollout), so it works on
any server the operator can reach, with the admin credentials of ``--token`` / MODELSERVE_TOKEN.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from modelserve.remote import URL, AdminToken, call

app = typer.Typer(
    help="Roll a model version out step by step on a running server, rolled back automatically on a breach "
    "(docs/ROLLOUT.md).",
    no_args_is_help=True,
)

AsJson = Annotated[bool, typer.Option("--json", help="The API's JSON instead of a summary.")]
FINISHED = ("promoted", "failed", "aborted")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``60s``, ``500ms``, ``2m``, ``1h`` or a plain number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration; write 60s, 500ms, 2m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_rate(text: str) -> float:
    """A fraction from ``1%`` or ``0.01``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%)?\s*", text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a rate; write 1% or 0.01")
    return float(match.group(1)) / (100 if match.group(2) else 1)


def parse_steps(text: str) -> list[int]:
    """Percentages from ``1,10,50,100``."""
    try:
        return [int(step) for step in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a list of percentages; write 1,10,50,100") from None


def _path(url: str, model: str, action: str = "") -> str:
    return f"{url}/v2/repository/models/{model}/rollout" + (f"/{action}" if action else "")


def _show(rollout: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(rollout, indent=2))
        return
    out = Console()
    steps = rollout["steps"]
    out.print(
        f"{rollout['model']}: {rollout['state']} - version {rollout['new_version']} takes {rollout['weight']} % "
        f"(stable {rollout['stable_version']}; step {rollout['step'] + 1} of {len(steps)}: "
        f"{', '.join(f'{s} %' for s in steps)}; every {rollout['interval_s']:g} s)",
        markup=False,
        highlight=False,
    )
    if rollout["reason"]:
        out.print(f"reason: {rollout['reason']}", markup=False, highlight=False)
    if rollout["checks"]:
        table = Table(
            "time (UTC)",
            "share",
            "outcome",
            "requests",
            "failures",
            "p99 new",
            "p99 stable",
            "p99 ratio",
            "median ratio",
        )
        for check in rollout["checks"]:
            table.add_row(
                datetime.fromtimestamp(check["at"], UTC).strftime("%H:%M:%S.%f")[:-3],
                f"{check['weight']} %",
                check["outcome"],
                str(check["new_requests"]),
                str(check["new_failures"]),
                _ms(check["new_p99_ms"]),
                _ms(check["stable_p99_ms"]),
                str(check.get("latency_ratio", "-")),
                str(check.get("median_ratio", "-")),
            )
        out.print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


Steps = Annotated[str, typer.Option(help="Shares for the new version, in %, step by step.")]
Interval = Annotated[str, typer.Option(help="Time between analyses, each step at least one: 60s, 500ms, 2m.")]
MaxErrorRate = Annotated[
    str, typer.Option(help="Largest share of the new version's requests that may fail in the model.")
]
MaxLatencyRatio = Annotated[
    float, typer.Option(help="Largest ratio of the new version's p99 latency to the stable one's.")
]
MinSamples = Annotated[int, typer.Option(min=1, help="Requests the new version answers before a check is judged.")]
LatencyWindows = Annotated[
    int, typer.Option(min=1, help="Windows in a row whose latency must breach before a rollback.")
]


def request_body(
    version: int,
    steps: str,
    interval: str,
    max_error_rate: str,
    max_latency_ratio: float,
    min_samples: int,
    latency_windows: int,
) -> dict[str, Any]:
    """The rollout API's start body from the command line's spelling of it."""
    return {
        "version": version,
        "steps": parse_steps(steps),
        "interval_s": parse_duration(interval),
        "max_error_rate": parse_rate(max_error_rate),
        "max_latency_ratio": max_latency_ratio,
        "min_samples": min_samples,
        "latency_windows": latency_windows,
    }


@app.command()
def start(
    model: str,
    version: Annotated[int, typer.Option(min=1, help="The version to roll out; it must be in the repository.")],
    steps: Steps = "1,10,50,100",
    interval: Interval = "60s",
    max_error_rate: MaxErrorRate = "1%",
    max_latency_ratio: MaxLatencyRatio = 1.5,
    min_samples: MinSamples = 100,
    latency_windows: LatencyWindows = 1,
    wait: Annotated[
        bool, typer.Option(help="Follow it until it is promoted (exit 0) or rolled back (exit 1).")
    ] = False,
    url: URL = "http://127.0.0.1:8000",
    token: AdminToken = None,
    as_json: AsJson = False,
) -> None:
    """Start moving MODEL's requests that name no version to VERSION, analysed at every step."""
    body = request_body(version, steps, interval, max_error_rate, max_latency_ratio, min_samples, latency_windows)
    rollout = call("POST", _path(url, model), token, body)
    _show(rollout, as_json)
    while wait and rollout["state"] not in FINISHED:
        time.sleep(min(rollout["interval_s"], 5.0))
        rollout = call("GET", _path(url, model), token)
        if rollout["state"] in FINISHED:
            _show(rollout, as_json)
    if rollout["state"] in ("failed", "aborted"):
        raise typer.Exit(1)


@app.command()
def status(
    model: Annotated[str | None, typer.Argument(help="A model; left out, every model's newest rollout.")] = None,
    url: URL = "http://127.0.0.1:8000",
    token: AdminToken = None,
    as_json: AsJson = False,
) -> None:
    """Where a rollout stands: its state, the new version's share, its latest analyses."""
    if model is not None:
        _show(call("GET", _path(url, model), token), as_json)
        return
    rollouts = call("GET", f"{url}/v2/repository/rollouts", token)
    if as_json:
        typer.echo(json.dumps(rollouts, indent=2))
        return
    table = Table("model", "state", "stable", "new", "share", "reason")
    for r in rollouts:
        table.add_row(
            r["model"], r["state"], str(r["stable_version"]), str(r["new_version"]), f"{r['weight']} %", r["reason"]
        )
    Console().print(table)


@app.command()
def pause(model: str, url: URL = "http://127.0.0.1:8000", token: AdminToken = None, as_json: AsJson = False) -> None:
    """Hold MODEL's rollout at its share: no analysis, no next step, until resumed."""
    _show(call("POST", _path(url, model, "pause"), token), as_json)


@app.command()
def resume(model: str, url: URL = "http://127.0.0.1:8000", token: AdminToken = None, as_json: AsJson = False) -> None:
    """Go on with MODEL's paused rollout."""
    _show(call("POST", _path(url, model, "resume"), token), as_json)


@app.command()
def abort(model: str, url: URL = "http://127.0.0.1:8000", token: AdminToken = None, as_json: AsJson = False) -> None:
    """Stop MODEL's rollout: every request back to the stable version, the new one unloaded."""
    _show(call("POST", _path(url, model, "abort"), token), as_json)
