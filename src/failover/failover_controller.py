"""``python -m src.failover.failover_controller --from-region X --to-region Y``: the runbook's last resort,
which is ``modelserve regions failover`` with the same flags (``--back``, ``--force``, ``--json``,
``--runtime-api``, ``--regions-file``). The regions file and the router's runtime API come from
REGIONS_FILE and ROUTER_RUNTIME_API."""

from __future__ import annotations

import typer

from modelserve.regions.router_cli import failover

app = typer.Typer(add_completion=False)
app.command()(failover)

if __name__ == "__main__":
    app(prog_name="python -m src.failover.failover_controller")
