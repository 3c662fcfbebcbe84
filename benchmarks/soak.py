"""A soak test: one real `modelserve serve` process under mixed load, load/unload churn and bad requests
for a fixed time, watching its memory for a leak and every answer for a wrong one.

    .venv/bin/python -m benchmarks.soak --minutes 10 [--out benchmarks/results/soak] [--clients 8]
                                        [--serve-option=--log-level=debug ...] [--env KEY=VALUE ...]

The server runs as in production: the settings of deploy/kubernetes/base/modelserve.env (explicit
model control, every model loaded at start, 1 % access log and traces, the latter sent to an OTLP
collector in this process that drops them), except its own repository, loopback, free ports, and a
small MAX_INPUT_SIZE_MB so an oversized body is cheap to send. `--env` and `--serve-option` (both
repeatable) change that. The repository is the example one (mlp, simple, iris, tiny_cnn) plus
`mlp_churn`, a copy of the mlp, so the churn does not disturb the load on mlp.

For the whole run: closed-loop clients (HTTP binary, HTTP JSON, /v1/predict and gRPC, a protocol each)
call every example model and check each 200 against the model run in this process on the same
input; `mlp_churn` is unloaded and loaded again every few seconds through both APIs while a paced
client calls it (refusals naming it, 503 or 404, are expected); malformed requests go out at a low
rate, each expecting its 4xx. The server's RSS is sampled every second.

Reports on stdout, and in --out: soak.json (every figure and sample), soak.png (RSS, p50/p99 and
answers other than ok over time) and server.log. Exits 1 on any wrong answer, unexpected status or
transport error, on RSS drift over --max-drift-percent, or if the server crashes (the log's tail is
printed) or does not stop on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import uvloop

from benchmarks.models import BENCH_REPOSITORY, EXAMPLES, build_examples
from benchmarks.overhead import collector
from benchmarks.serving import start_server
from benchmarks.soak_cases import (
    FAILURES,
    PROTOCOLS,
    Request,
    bad_requests,
    control_request,
    inference_requests,
    reference,
)
from benchmarks.soak_report import (
    MIB,
    Sample,
    answer_counts,
    plot,
    print_report,
    process_figures,
    rss_figures,
    window_figures,
)
from benchmarks.soak_traffic import Client, Tally, churn, closed_loop, paced
from modelserve.bench.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = ROOT / "deploy" / "kubernetes" / "base" / "modelserve.env"
MODELS = ("mlp", "simple", "iris", "tiny_cnn")
CHURNED = "mlp_churn"
STOP_TIMEOUT_S = 45  # the server's own graceful shutdown allows 30 s


class ServerExited(Exception):
    """The server process ended before the soak did."""


def repository() -> Path:
    """The example models found built, plus the mlp again under the churned name, in .bench."""
    build_examples()
    target = BENCH_REPOSITORY.parent / "soak-repository"
    shutil.rmtree(target, ignore_errors=True)
    for model in MODELS:
        if (EXAMPLES / model / "1").is_dir():
            shutil.copytree(EXAMPLES / model, target / model)
    shutil.copytree(EXAMPLES / "mlp", target / CHURNED)
    return target


def environment(args: argparse.Namespace, otlp_endpoint: str) -> dict[str, str]:
    """The production ConfigMap's settings, with the soak's differences, then --env."""
    lines = PRODUCTION_ENV.read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    for name in ("MODEL_REPOSITORY", "HOST", "HTTP_PORT", "GRPC_PORT"):  # ours, loopback, free ports
        env.pop(name, None)
    env |= {
        "MODEL_CONTROL_MODE": "explicit",  # the churn loads and unloads through the API
        "MODEL_CACHE_DIR": str(args.out / "model-cache"),
        "MAX_INPUT_SIZE_MB": f"{args.max_input_size_mb:g}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
    }
    for item in args.env:
        name, equals, value = item.partition("=")
        if not equals:
            raise SystemExit(f"--env {item!r}: write it as KEY=VALUE")
        env[name] = value
    return env


@dataclass(frozen=True)
class Plan:
    """Everything the soak sends, encoded before the load begins."""

    load: dict[str, list[Request]]  # by protocol: every served model at two batch sizes
    churned: list[Request]  # the churned model, in every protocol
    bad: list[Request]
    controls: list[tuple[Request, Request]]  # (unload, load) through V2's repository API, then /v1's


def plan(url: str, grpc_address: str, models: Path, max_input_bytes: int) -> Plan:
    """The requests, each with the answer the model gives in this process to the same input."""
    load: dict[str, list[Request]] = {protocol: [] for protocol in PROTOCOLS}
    churned: list[Request] = []
    for model in MODELS:
        if not (models / model).is_dir():
            continue
        outputs = [o["name"] for o in _metadata(url, model)["outputs"]]
        for batch, seed in ((1, 1), (3, 2)):
            workload = Workload.from_server(url, model, batch, seed)
            expected = reference(models / model / "1", workload.inputs, outputs)
            for protocol, request in inference_requests(workload, expected, url, grpc_address).items():
                load[protocol].append(request)
            if model == "mlp":
                same = inference_requests(replace(workload, model=CHURNED), expected, url, grpc_address, refusable=True)
                churned += same.values()
    controls = [
        (control_request(url, f"{prefix}/{CHURNED}/unload"), control_request(url, f"{prefix}/{CHURNED}/load"))
        for prefix in ("/v2/repository/models", "/v1/models")
    ]
    return Plan(load, churned, bad_requests(url, grpc_address, max_input_bytes), controls)


def _metadata(url: str, model: str) -> Any:
    return httpx.get(f"{url}/v2/models/{model}", timeout=30).raise_for_status().json()


async def sample(process: subprocess.Popen[bytes], began: float, deadline: float, samples: list[Sample]) -> None:
    """The server's RSS, CPU, open files and threads every second until ``deadline``."""
    watched = psutil.Process(process.pid)
    watched.cpu_percent()
    tick = 0
    while True:
        if process.poll() is not None:
            raise ServerExited(f"the server exited with {process.returncode} after {time.perf_counter() - began:.1f} s")
        try:
            with watched.oneshot():
                now = time.perf_counter() - began
                rss, cpu = watched.memory_info().rss, watched.cpu_percent()
                samples.append(Sample(now, rss, cpu, watched.num_fds(), watched.num_threads()))
        except psutil.NoSuchProcess:
            await asyncio.sleep(0.1)  # it has just exited: poll() says how, on the next turn
            continue
        tick += 1
        if began + tick > deadline:
            return
        await asyncio.sleep(max(0.0, began + tick - time.perf_counter()))


@dataclass
class Run:
    """What a soak gathered: every answer, the server's samples, and what went wrong beyond answers."""

    tally: Tally
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0
    client_cpu_percent: float = 0.0  # this process, load generator and answer checks together
    problems: list[str] = field(default_factory=list)


async def soak(
    process: subprocess.Popen[bytes], url: str, grpc_address: str, traffic: Plan, args: argparse.Namespace
) -> Run:
    """Run every load until the deadline; stop early, with the reason, if the server exits."""
    began, cpu_began = time.perf_counter(), time.process_time()
    deadline = began + args.minutes * 60
    run = Run(Tally(began, args.minutes * 60, args.window))
    clients = [Client(url, grpc_address, run.tally, args.request_timeout) for _ in range(args.clients + 3)]
    jobs = []
    for i, client in enumerate(clients[: args.clients]):
        requests = traffic.load[PROTOCOLS[i % len(PROTOCOLS)]]
        turn = (i // len(PROTOCOLS)) % len(requests)  # clients of one protocol start on different models
        jobs.append(closed_loop(client, requests[turn:] + requests[:turn], deadline))
    prober, misbehaving, controller = clients[args.clients :]
    jobs.append(paced(prober, traffic.churned, args.churn_request_interval, deadline))
    jobs.append(paced(misbehaving, traffic.bad, args.bad_interval, deadline, fresh=True))
    jobs.append(churn(controller, traffic.controls, args.churn_interval, deadline))
    tasks = [asyncio.create_task(job) for job in jobs]
    tasks.append(asyncio.create_task(sample(process, began, deadline, run.samples)))
    limit = args.minutes * 60 + args.request_timeout + 30
    done, pending = await asyncio.wait(tasks, timeout=limit, return_when=asyncio.FIRST_EXCEPTION)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending and not any(t.exception() for t in done):
        run.problems.append(f"{len(pending)} loops still running {limit:g} s after the start: cancelled")
    for task in done:
        error = task.exception()
        if isinstance(error, ServerExited):
            run.problems.append(str(error))
        elif error is not None:
            raise error
    for client in clients:
        await client.close()
    run.seconds = time.perf_counter() - began
    run.client_cpu_percent = (time.process_time() - cpu_began) / run.seconds * 100
    return run


def stop(process: subprocess.Popen[bytes]) -> tuple[str, bool]:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S: how it went, and whether it stopped cleanly."""
    if process.poll() is not None:
        return f"had already exited with {process.returncode}", False
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return f"did not stop within {STOP_TIMEOUT_S} s of SIGTERM: killed", False
    # uvicorn raises the signal again once it has shut down gracefully, so -SIGTERM is a clean stop.
    clean = code in (0, -signal.SIGTERM)
    return f"stopped by SIGTERM in {time.perf_counter() - started:.1f} s, exit status {code}", clean


def tail(log: Path, lines: int = 30) -> str:
    """The last lines of the server's log, each cut to a readable width."""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"  | {line[:300]}" for line in text)


def figures(run: Run, args: argparse.Namespace, warmup: float, env: dict[str, str], models: Path) -> dict[str, Any]:
    """The soak.json document, with the reasons the soak failed (none when it passed)."""
    rss = rss_figures(run.samples, warmup, args.max_drift_percent)
    answers = answer_counts(run.tally.totals())
    reasons = list(run.problems)
    reasons += [f"{sum(answers[o.value].values()):,} {o.value}" for o in FAILURES if answers[o.value]]
    if not rss["measured"]:
        reasons.append("no RSS sample after the warm-up")
    elif rss["drift_percent"] > args.max_drift_percent:
        reasons.append(f"RSS drift {rss['drift_percent']:.2f} % above {args.max_drift_percent:g} %")
    return {
        "settings": {
            "minutes": args.minutes, "seconds_run": run.seconds, "clients": args.clients, "warmup_s": warmup,
            "window_s": args.window, "churn_interval_s": args.churn_interval, "bad_interval_s": args.bad_interval,
            "serve_options": args.serve_option, "server_env": env, "models": sorted(p.name for p in models.iterdir()),
        },
        "rss": rss,
        "process": process_figures(run.samples, warmup),
        "client_cpu_percent": run.client_cpu_percent,
        "answers": answers,
        "windows": window_figures(run.tally, run.seconds, warmup),
        "failures": run.tally.failures,
        "samples": [{"t": s.t, "rss_mib": s.rss / MIB, "cpu_percent": s.cpu_percent, "fds": s.fds,
                     "threads": s.threads} for s in run.samples],
        "reasons": reasons,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True, help="length of the run, warm-up included")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients of the mixed load")
    parser.add_argument("--warmup", type=float, help="seconds before measuring RSS (default: 60 or 10 %% of the run)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per latency and throughput window")
    parser.add_argument("--churn-interval", type=float, default=2.0, help="seconds between unload and load")
    parser.add_argument("--churn-request-interval", type=float, default=0.02, help="seconds between calls to it")
    parser.add_argument("--bad-interval", type=float, default=0.5, help="seconds between bad requests")
    parser.add_argument("--max-input-size-mb", type=float, default=1.0, help="the server's MAX_INPUT_SIZE_MB")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds before a request is lost")
    parser.add_argument("--max-drift-percent", type=float, default=5.0, help="RSS drift that fails the soak")
    parser.add_argument("--serve-option", action="append", default=[], help="passed to modelserve serve (repeatable)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server (repeatable)")
    args = parser.parse_args()
    if args.minutes <= 0 or args.clients < 1:
        raise SystemExit("--minutes must be above 0 and --clients at least 1")
    warmup = args.warmup if args.warmup is not None else min(60.0, args.minutes * 6)
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in ("soak.json", "soak.png"):  # so that a run that ends early leaves no older figures behind
        (args.out / stale).unlink(missing_ok=True)
    log_path = args.out / "server.log"
    models = repository()

    with collector() as endpoint, log_path.open("wb") as log:
        env = environment(args, endpoint)
        try:
            process, url, grpc_address = start_server(models, 1, args.serve_option, env, log)
        except SystemExit as exc:
            raise SystemExit(f"soak FAILED: {exc}; the server log ends:\n{tail(log_path)}") from None
        print(f"server pid {process.pid} at {url} and {grpc_address}; soaking for {args.minutes:g} min", flush=True)
        try:
            traffic = plan(url, grpc_address, models, int(args.max_input_size_mb * MIB))
            run = uvloop.run(soak(process, url, grpc_address, traffic, args))
        finally:
            stopped, clean = stop(process)

    document = figures(run, args, warmup, env, models)
    if not clean:
        document["reasons"].append(f"server {stopped}")
    document["server"] = {"stopped": stopped, "log": str(log_path)}
    (args.out / "soak.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print_report(document)
    if run.samples:
        plot(document, args.out / "soak.png")
    print(f"figures: {args.out / 'soak.json'}, plot: {args.out / 'soak.png'}, server log: {log_path}")
    if run.problems or not clean:
        print(f"the server log ends:\n{tail(log_path)}")
    sys.exit(1 if document["reasons"] else 0)


if __name__ == "__main__":
    main()
