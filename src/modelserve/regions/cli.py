"""``modelserve regions``: replicate model versions between regional stores and read where they stand."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Replicate model versions between regional model stores, and read their state (docs/REGIONS.md).",
    no_args_is_help=True,
)
