"""Synthetic trace families, seeded so a family, a seed and its parameters always give the same trace.

Each family draws a catalogue of models (sizes log-normal around a few hundred MB, load time growing with
size) and arrivals for each model over ``days``:

- ``periodic``: fixed-rate schedules (a period per model, a little jitter, a few requests skipped);
- ``bursty``: bursts of requests at random times, nothing in between;
- ``diurnal``: random requests whose rate follows the time of day (a peak hour per model), quieter at
  weekends;
- ``chained``: pipelines: a head model requested at random, its followers a few tens of seconds later;
- ``rare``: a request or two a day, half of them at a fixed time of day, half at random;
- ``mixed``: a fifth of the models of each of the above;
- ``office``: office hours: most models get bursts at random within a daily window of their own (opening
  between 7 and 10 local time, in one of a few time zones, for 6 to 10 hours) on weekdays, and nothing at
  night or at weekends; the rest get a few bursts a day at any hour. Not part of ``mixed``.

Day 0 of a trace is a Monday: days 5 and 6 of each week are the weekend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from modelserve.prewarm.policy import ModelInfo
from modelserve.prewarm.traces import Trace

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Shape:
    """The knobs of a family; the defaults are the tuning set, other values make held-out traces."""

    jitter: float = 0.02  # periodic: jitter as a share of the period
    skip: float = 0.02  # periodic: share of scheduled requests that never come
    burst_size: float = 20.0  # bursty: mean requests per burst
    chain_lag: tuple[float, float] = (10.0, 60.0)  # chained: seconds between a model and its follower
    follow: float = 0.9  # chained: chance a follower is requested
    peak_to_trough: float = 8.0  # diurnal: rate at the peak hour over the quietest
    window_jitter: float = 900.0  # office: standard deviation of a day's opening and closing, in seconds
    absent: float = 0.05  # office: chance a model gets no request on a weekday (a holiday, a day off)
    session: float = 5.0  # office: mean requests per burst (a user's session), of any model of the family


Rate = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, slots=True)
class Unforeseeable:
    """The part of a model's arrivals no policy can see coming: starts of activity at random (a Poisson
    process of ``rate(t)`` per second), each followed by ``burst - 1`` more requests on average, ``spacing``
    seconds apart on average. ``modelserve.prewarm.bound`` turns these into the fewest cold starts any policy
    can expect."""

    rate: Rate
    burst: float = 1.0
    spacing: float = 5.0


Arrivals = list[np.ndarray]
Truths = list[Unforeseeable | None]  # per model, in the order of its arrivals; None: all of it foreseeable
Kind = Callable[[np.random.Generator, int, float, Shape], tuple[Arrivals, Truths]]
BURST_SPACING = 5.0  # bursty: mean seconds between two requests of a burst


def _constant(rate: float, t: np.ndarray) -> np.ndarray:
    return np.full(np.shape(t), rate)


def _periodic(rng: np.random.Generator, count: int, seconds: float, shape: Shape) -> tuple[Arrivals, Truths]:
    out = []
    for period in np.exp(rng.uniform(np.log(60.0), np.log(4 * 3600.0), count)):
        ticks = np.arange(rng.uniform(0, period), seconds, period)
        ticks = ticks + rng.normal(0.0, shape.jitter * period, ticks.size)
        out.append(ticks[rng.random(ticks.size) >= shape.skip])
    return out, [None] * count


def _bursts(rng: np.random.Generator, starts: np.ndarray, size: float) -> np.ndarray:
    parts = [start + np.cumsum(rng.exponential(BURST_SPACING, rng.geometric(1 / size))) for start in starts]
    return np.concatenate(parts) if parts else np.zeros(0)


def _bursty(rng: np.random.Generator, count: int, seconds: float, shape: Shape) -> tuple[Arrivals, Truths]:
    out = []
    truths: Truths = []
    for gap in np.exp(rng.uniform(np.log(600.0), np.log(6 * 3600.0), count)):
        starts = np.cumsum(rng.exponential(gap, int(seconds / gap * 2) + 10))
        out.append(_bursts(rng, starts[starts < seconds], shape.burst_size))
        truths.append(Unforeseeable(partial(_constant, 1 / gap), shape.burst_size, BURST_SPACING))
    return out, truths


def _poisson(
    rng: np.random.Generator, rate: Callable[[np.ndarray], np.ndarray], peak: float, seconds: float
) -> np.ndarray:
    """A non-homogeneous Poisson process by thinning: ``rate(t) <= peak`` requests per second."""
    times = np.cumsum(rng.exponential(1 / peak, int(seconds * peak * 1.2) + 20))
    times = times[times < seconds]
    return times[rng.random(times.size) * peak < rate(times)]


def _diurnal(rng: np.random.Generator, count: int, seconds: float, shape: Shape) -> tuple[Arrivals, Truths]:
    out = []
    truths: Truths = []
    ratio = shape.peak_to_trough
    for mean_gap, peak_hour in zip(
        np.exp(rng.uniform(np.log(60.0), np.log(3600.0), count)), rng.uniform(0, 24, count), strict=True
    ):
        peak = 2.0 / mean_gap

        def rate(t: np.ndarray, peak: float = peak, hour: float = peak_hour) -> np.ndarray:
            daily = (1 + np.cos(2 * np.pi * (t / 3600.0 - hour) / 24)) / 2  # 1 at the peak hour, 0 twelve hours off
            weekend = np.where((t // DAY) % 7 >= 5, 0.3, 1.0)
            return peak * (1 / ratio + (1 - 1 / ratio) * daily**2) * weekend

        out.append(_poisson(rng, rate, peak, seconds))
        truths.append(Unforeseeable(rate))
    return out, truths


def _chained(rng: np.random.Generator, count: int, seconds: float, shape: Shape) -> tuple[Arrivals, Truths]:
    out: Arrivals = []
    truths: Truths = []
    low, high = shape.chain_lag
    while len(out) < count:
        length = min(int(rng.integers(2, 5)), count - len(out))
        gap = float(np.exp(rng.uniform(np.log(300.0), np.log(3 * 3600.0))))
        times = np.cumsum(rng.exponential(gap, int(seconds / gap * 2) + 10))
        times = times[times < seconds]
        out.append(times)
        truths.append(Unforeseeable(partial(_constant, 1 / gap)))
        for _ in range(length - 1):
            times = times[rng.random(times.size) < shape.follow]
            times = times + rng.uniform(low, high, times.size)
            out.append(times)
            truths.append(None)  # its leader announces it
    return out, truths


def _rare(rng: np.random.Generator, count: int, seconds: float, shape: Shape) -> tuple[Arrivals, Truths]:
    out = []
    truths: Truths = []
    days = int(np.ceil(seconds / DAY))
    for index in range(count):
        if index % 2 == 0:
            daily = rng.uniform(0, DAY) + DAY * np.arange(days) + rng.normal(0, 600.0, days)
            out.append(daily[rng.random(days) >= shape.skip])
            truths.append(None)
        else:
            gap = rng.uniform(0.5, 2.0) * DAY
            out.append(np.cumsum(rng.exponential(gap, days * 4 + 10)))
            truths.append(Unforeseeable(partial(_constant, 1 / gap)))
    return out, truths


OFFICE_SHARE = 0.85  # office: share of the models that keep office hours; the others burst at any hour
OFFICE_ZONES = (0.0, 0.0, 0.0, 1.0, 2.0, -5.0, 8.0)  # office: hours east of UTC, drawn with equal chance
OFFICE_GAP = (900.0, 3 * 3600.0)  # office: mean seconds between bursts within a window, log-uniform in this
BACKGROUND_GAP = (2 * 3600.0, 12 * 3600.0)  # office: ... and between the others' bursts, at any hour
WEEKDAYS = 5  # days 0-4 of each week; 5 and 6 are the weekend


def _windowed(windows: np.ndarray, rate: float, t: np.ndarray) -> np.ndarray:
    """``rate`` within any of ``windows`` (sorted, disjoint ``(open, close)`` rows), 0 outside them."""
    index = np.searchsorted(windows[:, 0], t, side="right") - 1
    inside = (index >= 0) & (t < windows[np.maximum(index, 0), 1])
    return np.where(inside, rate, 0.0)


def _office(rng: np.random.Generator, count: int, seconds: float, shape: Shape) -> tuple[Arrivals, Truths]:
    out: Arrivals = []
    truths: Truths = []
    days = int(np.ceil(seconds / DAY))
    for index in range(count):
        if index >= round(OFFICE_SHARE * count):
            gap = float(np.exp(rng.uniform(*np.log(BACKGROUND_GAP))))
            starts = np.cumsum(rng.exponential(gap, int(seconds / gap * 2) + 10))
            out.append(_bursts(rng, starts[starts < seconds], shape.session))
            truths.append(Unforeseeable(partial(_constant, 1 / gap), shape.session, BURST_SPACING))
            continue
        opens = (rng.uniform(7.0, 10.0) - rng.choice(OFFICE_ZONES)) * 3600.0
        length = rng.uniform(6.0, 10.0) * 3600.0
        gap = float(np.exp(rng.uniform(*np.log(OFFICE_GAP))))
        rows = []
        for day in range(days):
            jitter = rng.normal(0.0, shape.window_jitter, 2)
            if day % 7 < WEEKDAYS and rng.random() >= shape.absent:
                start = day * DAY + opens + jitter[0]
                rows.append((start, start + length + jitter[1] - jitter[0]))
        windows = np.array(rows).reshape(-1, 2)
        drawn = [o + np.cumsum(rng.exponential(gap, int((c - o) / gap * 2) + 10)) for o, c in windows]
        starts = np.concatenate([d[d < c] for d, (_, c) in zip(drawn, windows, strict=True)] or [np.zeros(0)])
        out.append(_bursts(rng, starts, shape.session))
        truths.append(Unforeseeable(partial(_windowed, windows, 1 / gap), shape.session, BURST_SPACING))
    return out, truths


KINDS: dict[str, Kind] = {
    "periodic": _periodic,
    "bursty": _bursty,
    "diurnal": _diurnal,
    "chained": _chained,
    "rare": _rare,
}
FAMILIES = (*KINDS, "mixed", "office")
_DRAW: dict[str, Kind] = {**KINDS, "office": _office}  # ``mixed`` draws from KINDS only


def catalogue(rng: np.random.Generator, count: int, prefix: str = "m") -> dict[str, ModelInfo]:
    """``count`` models: size log-normal around 300 MB, load time about a second plus a second per 150 MB."""
    sizes = np.clip(rng.lognormal(np.log(300.0), 0.8, count), 10.0, 4000.0)
    loads = 0.5 + sizes / 150.0 * rng.uniform(0.5, 1.5, count)
    return {
        f"{prefix}{i:03d}": ModelInfo(f"{prefix}{i:03d}", round(float(s), 1), round(float(t), 2))
        for i, (s, t) in enumerate(zip(sizes, loads, strict=True))
    }


def generate(
    family: str, *, seed: int, models: int = 100, days: float = 7.0, shape: Shape | None = None
) -> tuple[Trace, dict[str, ModelInfo]]:
    """A trace of ``family`` and its models; the same arguments always give the same result."""
    trace, infos, _ = _draw(family, seed, models, days, shape or Shape())
    return trace, infos


def unforeseeable(
    family: str, *, seed: int, models: int = 100, days: float = 7.0, shape: Shape | None = None
) -> dict[str, Unforeseeable]:
    """What of :func:`generate`'s trace for the same arguments no policy can foresee, per model; models
    missing are wholly foreseeable (on a schedule, or announced by a leader)."""
    return _draw(family, seed, models, days, shape or Shape())[2]


def _draw(
    family: str, seed: int, models: int, days: float, shape: Shape
) -> tuple[Trace, dict[str, ModelInfo], dict[str, Unforeseeable]]:
    if family not in FAMILIES:
        raise ValueError(f"unknown trace family {family!r}; choose from {', '.join(FAMILIES)}")
    if models < 1 or days <= 0:
        raise ValueError("a trace needs at least one model and a positive number of days")
    rng = np.random.default_rng(seed)
    seconds = days * DAY
    kinds = list(KINDS) if family == "mixed" else [family]
    arrivals: Arrivals = []
    truths: Truths = []
    for index, kind in enumerate(kinds):
        share = models // len(kinds) + (1 if index < models % len(kinds) else 0)
        drawn, truth = _DRAW[kind](rng, share, seconds, shape)
        arrivals.extend(drawn)
        truths.extend(truth)
    infos = catalogue(rng, models)
    names = list(infos)
    pairs = [
        (float(t), names[i])
        for i, times in enumerate(arrivals)
        for t in np.sort(times[(times >= 0) & (times < seconds)])
    ]
    known = {names[i]: truth for i, truth in enumerate(truths) if truth is not None}
    return Trace.from_arrivals(pairs), infos, known


def held_out(shape: Shape) -> Shape:
    """The held-out variant of ``shape``: more jitter, bigger bursts, longer lags, a flatter day, office hours
    that move more from day to day and more days off."""
    return replace(
        shape,
        jitter=0.04,
        skip=0.05,
        burst_size=30.0,
        chain_lag=(20.0, 90.0),
        follow=0.8,
        peak_to_trough=5.0,
        window_jitter=1800.0,
        absent=0.1,
        session=8.0,
    )
