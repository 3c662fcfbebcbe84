"""``python -m src.cost.cost_analyzer --days 7 --by-region``: the runbook's cost breakdown, which is
``modelserve regions cost`` with the same flags (``--by-model``, ``--json``, ``--prices-file``,
``--database-url``). The price table and the database come from PRICES_FILE and DATABASE_URL."""

from __future__ import annotations

import typer

from modelserve.regions.cost_cli import cost

app = typer.Typer(add_completion=False)
app.command()(cost)

if __name__ == "__main__":
    app(prog_name="python -m src.cost.cost_analyzer")
