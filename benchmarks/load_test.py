"""`python benchmarks/load_test.py --url URL --concurrent N --duration S [--model NAME]`, as the runbooks
run it: `modelserve bench` at N concurrent clients for S seconds, for each model named, or for every
model the server has READY. Other `modelserve bench` options pass through."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

SOURCE = Path(__file__).resolve().parents[1] / "src"
if SOURCE.is_dir():  # in a checkout, run the checkout's modelserve
    sys.path.insert(0, str(SOURCE))

from modelserve.cli import app  # noqa: E402


def main(argv: list[str]) -> int:
    """Run the bench per model; the exit status of the first that failed, else 0."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the server")
    parser.add_argument("--concurrent", type=int, default=8, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--model", action="append", help="model to load; repeatable (default: every READY one)")
    args, rest = parser.parse_known_args(argv)
    models = args.model or _ready(args.url)
    if not models:
        print(f"{args.url} serves no READY model", file=sys.stderr)
        return 1
    for model in models:
        options = ["--url", args.url, "--concurrency", str(args.concurrent), "--duration", str(args.duration)]
        code = app(["bench", model, *options, *rest], prog_name="load_test.py", standalone_mode=False)
        if code:
            return int(code)
    return 0


def _ready(url: str) -> list[str]:
    index = httpx.post(f"{url}/v2/repository/index", json={"ready": True}, timeout=30).raise_for_status().json()
    return sorted({entry["name"] for entry in index if entry.get("state") == "READY"})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
