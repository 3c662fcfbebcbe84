"""``python -m src.replication.model_replicator``: the runbook's flags, mapped onto ``modelserve regions``.

    --model-id M --check-status | --status           → modelserve regions status -m M
    --model-id M --source-region S --target-regions T → modelserve regions replicate -m M --source-region S ...
    --model-id M --replicate                          → modelserve regions replicate -m M
    --verify-checksum --model-id M                    → modelserve regions verify -m M
    --queue-depth                                     → modelserve regions queue
    --list-pending                                    → modelserve regions pending

The regions file and the database come from REGIONS_FILE and DATABASE_URL, or --regions-file and
--database-url here. Exit codes are the command's.
"""

from __future__ import annotations

import argparse
import sys

from modelserve.regions.cli import app


def translate(argv: list[str]) -> list[str]:
    """The ``modelserve regions`` arguments the runbook's ``argv`` stands for; SystemExit(2) when it names none."""
    parser = argparse.ArgumentParser(
        prog="python -m src.replication.model_replicator",
        description="Replicate model versions between regional stores (the runbook's commands; docs/REGIONS.md).",
    )
    parser.add_argument("--model-id", help="A model's name, or name:version.")
    parser.add_argument("--check-status", action="store_true", help="Replication state per target region.")
    parser.add_argument("--status", action="store_true", help="The same as --check-status.")
    parser.add_argument("--source-region", help="Region to copy from (default: first by priority).")
    parser.add_argument("--target-regions", help="Comma-separated regions to copy into (default: all others).")
    parser.add_argument("--replicate", action="store_true", help="Copy the model into the target regions now.")
    parser.add_argument("--verify-checksum", action="store_true", help="Re-read every region's copy and compare.")
    parser.add_argument("--queue-depth", action="store_true", help="Jobs waiting or running.")
    parser.add_argument("--list-pending", action="store_true", help="Jobs not replicated, with their last error.")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table.")
    parser.add_argument("--regions-file", help="The regions file (default: REGIONS_FILE).")
    parser.add_argument("--database-url", help="The jobs' database (default: DATABASE_URL).")
    args = parser.parse_args(argv)
    common = [
        *(["--regions-file", args.regions_file] if args.regions_file else []),
        *(["--database-url", args.database_url] if args.database_url else []),
    ]
    as_json = ["--json"] if args.json else []
    if args.queue_depth:
        return ["queue", *as_json, *common]
    if args.list_pending:
        return ["pending", *as_json, *common]
    if not args.model_id:
        parser.error("--model-id is needed, unless --queue-depth or --list-pending is given")
    model = ["--model-id", args.model_id]
    if args.verify_checksum:
        regions = ["--source-region", args.source_region] if args.source_region else []
        return ["verify", *model, *regions, *as_json, *common]
    if args.check_status or args.status:
        return ["status", *model, *as_json, *common]
    if args.replicate or args.source_region or args.target_regions:
        regions = [
            *(["--source-region", args.source_region] if args.source_region else []),
            *(["--target-regions", args.target_regions] if args.target_regions else []),
        ]
        return ["replicate", *model, *regions, *common]
    parser.error("say what to do: --check-status, --replicate, --verify-checksum, --queue-depth or --list-pending")
    raise AssertionError("unreachable")  # parser.error exits


def main(argv: list[str] | None = None) -> None:
    """Run the command the runbook's flags stand for."""
    app(args=translate(sys.argv[1:] if argv is None else argv), prog_name="modelserve regions")


if __name__ == "__main__":
    main()
