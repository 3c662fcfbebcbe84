"""The office family: most models get bursts within a daily window of their own on weekdays, none at night or
at weekends; its truth for the bound matches what it drew; and ``modelserve prewarm generate`` writes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelserve.prewarm.cli import app
from modelserve.prewarm.generators import (
    DAY,
    OFFICE_SHARE,
    WEEKDAYS,
    Shape,
    generate,
    held_out,
    unforeseeable,
)
from modelserve.prewarm.patterns import ACTIVATION_GAP
from modelserve.prewarm.traces import read_trace


def starts_by_model(family: str, seed: int, shape: Shape) -> dict[str, np.ndarray]:
    """Each model's burst starts (a request after ACTIVATION_GAP of silence), in time order."""
    trace, _ = generate(family, seed=seed, shape=shape)
    times: dict[str, list[float]] = {}
    for at, model in zip(trace.times, trace.models, strict=True):
        times.setdefault(model, []).append(at)
    out = {}
    for model, seen in times.items():
        arrivals = np.array(seen)
        out[model] = arrivals[np.diff(arrivals, prepend=-np.inf) > ACTIVATION_GAP]
    return out


@pytest.mark.parametrize("shape", [Shape(), held_out(Shape())], ids=["tuning", "held-out"])
def test_office_models_work_weekdays_within_a_window_of_their_own(shape: Shape) -> None:
    starts = starts_by_model("office", 3, shape)
    truths = unforeseeable("office", seed=3, shape=shape)
    office = [m for m in starts if int(m[1:]) < round(OFFICE_SHARE * 100)]
    assert len(office) == 85
    for model in office:
        at = starts[model]
        windows = truths[model].rate.args[0]  # (open, close) of each working day, as the generator drew them
        assert (truths[model].rate(at) > 0.0).all(), model  # every burst starts within one of them
        assert 1 <= len(windows) <= WEEKDAYS  # a week starting on Monday: five working days at most
        lengths = windows[:, 1] - windows[:, 0]
        assert (lengths > 6 * 3600.0 - 4 * shape.window_jitter).all()
        assert (lengths < 10 * 3600.0 + 4 * shape.window_jitter).all()
        # The same hours each day: what the model's bursts leave quiet is at least the night.
        hours = np.sort(at % DAY)
        assert np.diff(np.append(hours, hours[0] + DAY)).max() > 12 * 3600.0, model


def test_office_traffic_is_quiet_at_weekends_and_bursts_at_any_hour_for_the_others() -> None:
    starts = starts_by_model("office", 4, Shape())
    office = [m for m in starts if int(m[1:]) < 85]
    others = [m for m in starts if int(m[1:]) >= 85]
    # Friday's windows close by its end in every time zone drawn; nothing after until the week is over.
    assert max(float(starts[m][-1]) for m in office) < 5.2 * DAY
    assert any(float(starts[m][-1]) > 5.2 * DAY for m in others)
    at_any_hour = np.concatenate([starts[m] for m in others]) % DAY // 3600
    assert len(set(at_any_hour.astype(int))) == 24


def test_the_office_truth_accounts_for_the_bursts_of_the_trace() -> None:
    shape = held_out(Shape())
    starts = starts_by_model("office", 5, shape)
    truths = unforeseeable("office", seed=5, shape=shape)
    times = np.arange(0.0, 7 * DAY, 30.0) + 15.0
    expected = sum(float(t.rate(times).sum()) * 30.0 for t in truths.values())
    drawn = sum(len(s) for s in starts.values())
    # Bursts of one model that start within a minute of the last request of its previous burst read as one.
    assert 0.85 * expected < drawn <= 1.02 * expected
    assert truths["m000"].burst == shape.session


def test_the_held_out_office_moves_its_hours_and_skips_more_days() -> None:
    tuning, held = Shape(), held_out(Shape())
    assert held.window_jitter > tuning.window_jitter
    assert held.absent > tuning.absent
    assert held.session > tuning.session
    a, _ = generate("office", seed=6)
    b, _ = generate("office", seed=6)
    assert a.times == b.times


def test_modelserve_prewarm_generate_writes_the_office_family(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", "office", "--seed", "2", "--days", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    trace = read_trace(tmp_path / "trace.csv")
    expected, _ = generate("office", seed=2, days=1.0)
    assert len(trace) == len(expected)
