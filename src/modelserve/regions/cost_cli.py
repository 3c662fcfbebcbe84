"""``modelserve regions cost``: what serving and replication cost per region and model, from the usage
the servers recorded, at the price table's prices; with the budgets and each model's anomaly score."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelserve.terminal import err

if TYPE_CHECKING:  # the database's libraries are imported by the command, not by `modelserve --help`
    from sqlalchemy import Engine

    from modelserve.regions.cost import Line, Spending


PricesPath = Annotated[
    Path | None,
    typer.Option("--prices-file", envvar="PRICES_FILE", help="The price table (YAML; docs/REGIONS.md#cost)."),
]


def cost(
    days: Annotated[float, typer.Option(min=0.01, max=3660, help="How many days back from now to count.")] = 7.0,
    by_region: Annotated[bool, typer.Option("--by-region", help="One line per region.")] = False,
    by_model: Annotated[bool, typer.Option("--by-model", help="One line per model.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
    prices_file: PricesPath = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="DATABASE_URL",
            help="Database the servers record usage in; default: the traffic history's SQLite file in MODEL_CACHE_DIR.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Cost per region and/or model over the last N days (both without --by-region or --by-model), with
    the cost of 1,000 inferences of each model, each budget's spending and each model's anomaly score."""
    from modelserve.regions import cost as costs
    from modelserve.regions.cost import DAY_S
    from modelserve.regions.prices import PriceError, load_prices

    if prices_file is None:
        raise _fail("no price table: pass --prices-file PATH or set PRICES_FILE (docs/REGIONS.md#cost)", 2)
    try:
        table = load_prices(prices_file)
    except PriceError as exc:
        raise _fail(str(exc), 2) from None
    if not (by_region or by_model):
        by_region = by_model = True
    engine = _engine(database_url)
    until = time.time()
    try:
        lines = costs.report(engine, table, until - days * DAY_S, until, by_region, by_model)
        models = (
            lines
            if by_model and not by_region
            else costs.report(engine, table, until - days * DAY_S, until, False, True)
        )
        figures = costs.figures(engine, table, until)
    except PriceError as exc:
        raise _fail(str(exc), 2) from None
    finally:
        engine.dispose()
    if as_json:
        document = {
            "days": days,
            "currency": table.currency,
            "lines": [line.json() for line in lines],
            "models": [line.json() for line in models],
            "total": sum(line.cost.total for line in lines),
            "budgets": [_budget_json(s) for s in figures.budgets],
            "anomalies": [
                {"region": r, "model": m, "zscore": z, "daily_cost": figures.daily[r, m]}
                for (r, m), z in sorted(figures.zscores.items())
            ],
        }
        print(json.dumps(document, indent=1))
        return
    console = Console()
    console.print(_table(lines, by_region, by_model, table.currency, days))
    if by_region and not by_model:
        console.print(_table(models, False, True, table.currency, days))
    if figures.budgets:
        console.print(_budgets(figures.budgets, table.currency))
    flagged = {key: z for key, z in figures.zscores.items() if z > table.anomaly.threshold}
    for (region, model), z in sorted(flagged.items()):
        console.print(
            f"[red]anomaly[/red]: {model} in {region} cost {figures.daily[region, model]:.2f} {table.currency} "
            f"in the last 24 h, z = {z:.1f} against its last {table.anomaly.window_days} days"
        )


def _engine(database_url: str | None) -> Engine:
    from pydantic import ValidationError

    from modelserve.config import Settings, describe_error
    from modelserve.db import open_engine, shown
    from modelserve.history import store

    try:  # the server's default: the history's SQLite file in MODEL_CACHE_DIR
        settings = Settings()
    except ValidationError as exc:
        raise _fail(describe_error(exc), 2) from None
    url = database_url or settings.history_database_url
    engine = open_engine(url, "cost", pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow)
    try:
        store.migrate(engine)  # a database no server wrote to yet reads as empty, not as an error
    except Exception as exc:  # any database error: say which database, not the statement
        engine.dispose()
        raise _fail(f"cannot open the usage database {shown(url)}: {str(exc).splitlines()[0]}") from None
    return engine


def _table(lines: list[Line], by_region: bool, by_model: bool, currency: str, days: float) -> Table:
    groups = [name for name, on in (("region", by_region), ("model", by_model)) if on]
    table = Table(
        *groups,
        "requests",
        "inferences",
        "compute",
        "memory",
        "transfer",
        "total",
        "per 1k inf.",
        title=f"Cost per {' and '.join(groups)} in {currency}, last {days:g} day(s)",
    )
    for line in lines:
        per_1k = line.per_1k_inferences
        table.add_row(
            *([line.region] * by_region + [line.model] * by_model),
            _count(line.usage.requests),
            _count(line.usage.inferences),
            _money(line.cost.compute),
            _money(line.cost.memory),
            _money(line.cost.transfer),
            _money(line.cost.total),
            "-" if per_1k is None else _money(per_1k),
        )
    if lines:
        total = _money(sum(line.cost.total for line in lines))
        table.add_row("total", *[""] * (len(groups) - 1), "", "", "", "", "", total, "", end_section=True)
    return table


def _budgets(spendings: list[Spending], currency: str) -> Table:
    table = Table("region", "model", "period", f"budget {currency}", "spent", "share", title="Budgets")
    for each in spendings:
        colour = "red" if each.share >= 1 else "yellow" if each.share >= 0.8 else "green"
        table.add_row(
            each.budget.region,
            each.budget.model,
            each.budget.period,
            _money(each.budget.amount),
            _money(each.spent),
            f"[{colour}]{each.share:.0%}[/{colour}]",
        )
    return table


def _budget_json(each: Spending) -> dict[str, object]:
    budget = each.budget
    return {
        "region": budget.region,
        "model": budget.model,
        "period": budget.period,
        "budget": budget.amount,
        "spent": each.spent,
    }


def _money(amount: float) -> str:
    # Cents where they are the unit that matters; three significant digits for the fractions of a cent
    # a thousand inferences of a small model cost.
    return f"{amount:,.2f}" if amount >= 1 or amount == 0 else f"{amount:.3g}"


def _count(n: int) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)
