"""Seeded synthetic hourly transaction counts per combo, with labelled anomalies.

Each combo (``<network>_<txn_type>``) gets its own base level, daily shape (one or two
peaks), weekly shape (weekend dip or lift, later and flatter weekend days), slow growth
and wander, day-to-day jitter, autocorrelated hour-to-hour fluctuation and over-dispersed
count noise (gamma-Poisson, i.e. negative binomial).  The series is cut by time into
train / val / test.  Validation and test carry labelled anomaly events of every kind
(``spike``, ``dip`` incl. an outage, ``ramp``, ``level_shift``, ``peak_shift``), obvious
ones next to subtle ones, at least 48 h apart.  Every split also loses a few hours
(unlabelled data gaps): those rows are absent from the file.

Run ``python data/generate_transactions.py split --help`` for the options; ``data/README.md``
documents the schema and how events are placed.  Every combo draws from its own generator,
derived from ``(seed, sha256(combo))``, so adding or removing a combo leaves the others
byte-for-byte unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

log = logging.getLogger("generate_transactions" if __name__ == "__main__" else __name__)

COLUMNS = (
    "timestamp",
    "combo",
    "network",
    "txn_type",
    "count",
    "is_anomaly",
    "anomaly_type",
    "event_id",
    "split",
)
KINDS = ("spike", "dip", "ramp", "level_shift", "peak_shift")
SPLITS = ("train", "val", "test")
DEFAULT_SEED = 42
DEFAULT_START = "2025-01-06"  # a Monday
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "synthetic_transactions.csv"

MIN_EVENT_GAP_HOURS = 48  # from the last labelled hour of one event to the first of the next
EVENT_MARGIN_START_HOURS = 24  # no event in a split's first day
EVENT_MARGIN_END_HOURS = (
    24  # ... nor in its last day (so events in adjacent splits are 48 h apart too)
)
GAP_CLEARANCE_HOURS = 6  # data gaps keep this far from any event
PEAK_SHIFT_LABEL_MIN = 0.10  # peak_shift: hours changed by less than 10% are left untouched
HOURS_PER_DAY = 24


@dataclass(frozen=True)
class Bump:
    """One daily peak: a von Mises bump over the 24-hour circle.

    Attributes
    ----------
    peak_hour
        Hour of day (UTC, fractional) of the peak.
    height
        Height relative to the other bumps.
    concentration
        Von Mises kappa: larger means a narrower peak.
    """

    peak_hour: float
    height: float
    concentration: float


@dataclass(frozen=True)
class ComboProfile:
    """Everything that makes one combo's normal behaviour its own.

    Attributes
    ----------
    combo
        Series key, ``<network>_<txn_type>``.
    base_per_hour
        Mean hourly count of an average day at the start of the data.
    night_floor
        Share of the daily shape that does not depend on the hour (sets how deep nights are).
    bumps
        Daily peaks (the shape is normalised to mean 1 over the day).
    weekday_factors
        Daily level multipliers, Monday first.
    weekend_shift_hours
        Weekend peaks come this many hours later.
    weekend_flatten
        0..1: how much flatter weekend days are than weekdays.
    growth_per_year
        Linear drift of the level (0.10 = +10 % a year).
    wander_amplitude, wander_period_days
        A slow sinusoidal wander of the level (random phase).
    day_jitter, day_jitter_phi
        Log-scale AR(1) of the daily level: stationary sd and lag-1 correlation.
    hour_noise, hour_noise_phi
        Log-scale AR(1) across hours: stationary sd and lag-1 correlation.
    dispersion
        Gamma shape of the gamma-Poisson noise (higher = closer to Poisson).
    """

    combo: str
    base_per_hour: float
    night_floor: float
    bumps: tuple[Bump, ...]
    weekday_factors: tuple[float, float, float, float, float, float, float]
    weekend_shift_hours: float
    weekend_flatten: float
    growth_per_year: float
    wander_amplitude: float
    wander_period_days: float
    day_jitter: float
    day_jitter_phi: float
    hour_noise: float
    hour_noise_phi: float
    dispersion: float

    @property
    def network(self) -> str:
        """The part of ``combo`` before the first ``_``."""
        return self.combo.split("_", 1)[0]

    @property
    def txn_type(self) -> str:
        """The part of ``combo`` after the first ``_``."""
        return self.combo.split("_", 1)[1] if "_" in self.combo else ""


DEFAULT_PROFILES: tuple[ComboProfile, ...] = (
    # Card-present on the Accel network: midday peak plus an evening shoulder, quiet Sundays.
    ComboProfile(
        combo="Accel_CMP",
        base_per_hour=1800.0,
        night_floor=0.10,
        bumps=(Bump(14.0, 1.0, 2.5), Bump(19.5, 0.45, 6.0)),
        weekday_factors=(1.00, 1.02, 1.03, 1.04, 1.10, 0.84, 0.72),
        weekend_shift_hours=1.0,
        weekend_flatten=0.15,
        growth_per_year=0.10,
        wander_amplitude=0.02,
        wander_period_days=41.0,
        day_jitter=0.035,
        day_jitter_phi=0.5,
        hour_noise=0.03,
        hour_noise_phi=0.6,
        dispersion=400.0,
    ),
    # PIN-less on Accel: one broad late-morning peak, mild weekend dip.
    ComboProfile(
        combo="Accel_nopin",
        base_per_hour=600.0,
        night_floor=0.22,
        bumps=(Bump(12.0, 1.0, 1.8),),
        weekday_factors=(1.00, 1.00, 1.01, 1.02, 1.05, 0.93, 0.88),
        weekend_shift_hours=0.5,
        weekend_flatten=0.10,
        growth_per_year=0.18,
        wander_amplitude=0.025,
        wander_period_days=33.0,
        day_jitter=0.04,
        day_jitter_phi=0.4,
        hour_noise=0.035,
        hour_noise_phi=0.55,
        dispersion=300.0,
    ),
    # Card-present on Star, the biggest: sharp lunch peak, after-work peak, deep weekend dip.
    ComboProfile(
        combo="Star_CMP",
        base_per_hour=3000.0,
        night_floor=0.07,
        bumps=(Bump(13.0, 1.0, 3.0), Bump(17.5, 0.6, 5.0)),
        weekday_factors=(0.98, 1.00, 1.00, 1.02, 1.12, 0.76, 0.62),
        weekend_shift_hours=1.5,
        weekend_flatten=0.20,
        growth_per_year=0.06,
        wander_amplitude=0.015,
        wander_period_days=52.0,
        day_jitter=0.03,
        day_jitter_phi=0.6,
        hour_noise=0.025,
        hour_noise_phi=0.65,
        dispersion=500.0,
    ),
    # PIN-less on Star, the smallest: evening e-commerce peak, busier weekends.
    ComboProfile(
        combo="Star_nopin",
        base_per_hour=150.0,
        night_floor=0.18,
        bumps=(Bump(20.0, 1.0, 2.2), Bump(11.0, 0.35, 4.0)),
        weekday_factors=(0.95, 0.96, 0.97, 1.00, 1.06, 1.12, 1.08),
        weekend_shift_hours=0.0,
        weekend_flatten=0.05,
        growth_per_year=0.25,
        wander_amplitude=0.03,
        wander_period_days=29.0,
        day_jitter=0.05,
        day_jitter_phi=0.4,
        hour_noise=0.04,
        hour_noise_phi=0.5,
        dispersion=200.0,
    ),
)


@dataclass(frozen=True)
class SplitPlan:
    """The time layout: where the data starts and how many days each split has."""

    start: pd.Timestamp
    train_days: int = 98
    val_days: int = 28
    test_days: int = 28

    @property
    def hours(self) -> int:
        """Total number of hours."""
        return (self.train_days + self.val_days + self.test_days) * HOURS_PER_DAY

    def bounds(self) -> dict[str, tuple[int, int]]:
        """Half-open hour-index ranges ``[start, end)`` of each split."""
        a = self.train_days * HOURS_PER_DAY
        b = a + self.val_days * HOURS_PER_DAY
        return {"train": (0, a), "val": (a, b), "test": (b, self.hours)}


@dataclass(frozen=True)
class Event:
    """One labelled anomaly: ``multipliers[i]`` scales the expected count of hour ``start + i``.

    Every hour the event changes is labelled, and every labelled hour is changed.
    """

    kind: str
    start: int
    multipliers: NDArray[np.float64]
    description: str

    @property
    def end(self) -> int:
        """Index of the last labelled hour (inclusive)."""
        return self.start + len(self.multipliers) - 1


@dataclass(frozen=True)
class _EventTemplate:
    """An event before placement; ``reserve`` hours are kept free for it."""

    kind: str
    reserve: int
    params: dict[str, float]


# --------------------------------------------------------------------------- randomness


def combo_rng_seed(seed: int, combo: str) -> np.random.SeedSequence:
    """The combo's own seed sequence, from the global seed and a stable hash of its name.

    Parameters
    ----------
    seed
        The global seed.
    combo
        Series key; hashed with SHA-256 (not Python's salted ``hash``).

    Returns
    -------
    numpy.random.SeedSequence
        Children of it seed the combo's independent streams.
    """
    digest = hashlib.sha256(combo.encode("utf-8")).digest()
    return np.random.SeedSequence(entropy=seed, spawn_key=(int.from_bytes(digest[:8], "big"),))


# --------------------------------------------------------------------------- normal behaviour


def daily_shape(
    profile: ComboProfile, hour_of_day: NDArray[np.float64], weekend: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """The combo's daily shape at (fractional) hours of day, mean 1 over a day.

    Parameters
    ----------
    profile
        The combo.
    hour_of_day
        Hours of day in [0, 24); fractional values are allowed (used for shifted peaks).
    weekend
        Same shape as ``hour_of_day``: use the weekend variant (later, flatter).

    Returns
    -------
    NDArray[np.float64]
        Multiplier of the daily level, same shape as ``hour_of_day``.
    """

    def raw(h: NDArray[np.float64], shift: float) -> NDArray[np.float64]:
        out = np.full(h.shape, profile.night_floor, dtype=np.float64)
        for bump in profile.bumps:
            angle = 2.0 * np.pi * (h - bump.peak_hour - shift) / HOURS_PER_DAY
            out += bump.height * np.exp(bump.concentration * (np.cos(angle) - 1.0))
        return out

    grid = np.arange(HOURS_PER_DAY, dtype=np.float64)
    weekday = raw(hour_of_day, 0.0) / raw(grid, 0.0).mean()
    we_grid = raw(grid, profile.weekend_shift_hours)
    we_raw = raw(hour_of_day, profile.weekend_shift_hours)
    flat = profile.weekend_flatten
    weekend_shape = ((1.0 - flat) * we_raw + flat * we_grid.mean()) / we_grid.mean()
    shaped: NDArray[np.float64] = np.where(weekend, weekend_shape, weekday)
    return shaped


def _ar1(rng: np.random.Generator, n: int, sd: float, phi: float) -> NDArray[np.float64]:
    """A stationary AR(1) path of length ``n`` with marginal sd ``sd`` and lag-1 corr ``phi``."""
    out = np.empty(n, dtype=np.float64)
    innovation_sd = sd * np.sqrt(1.0 - phi * phi)
    shocks = rng.normal(0.0, innovation_sd, size=n)
    out[0] = rng.normal(0.0, sd)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + shocks[i]
    return out


def expected_counts(
    profile: ComboProfile, timestamps: pd.DatetimeIndex, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Expected hourly counts (before anomalies and count noise) for one combo.

    Level x growth x wander x weekday factor x daily shape x daily jitter x hourly jitter.

    Parameters
    ----------
    profile
        The combo.
    timestamps
        Consecutive hourly UTC timestamps.
    rng
        The combo's generator for this purpose.

    Returns
    -------
    NDArray[np.float64]
        One expected count per timestamp.
    """
    n = len(timestamps)
    hours = np.arange(n, dtype=np.float64)
    days = hours / HOURS_PER_DAY
    day_index = (np.arange(n) // HOURS_PER_DAY).astype(np.int64)
    dow = timestamps.dayofweek.to_numpy()
    hour_of_day = timestamps.hour.to_numpy().astype(np.float64)
    weekend = dow >= 5

    growth = 1.0 + profile.growth_per_year * days / 365.25
    phase = rng.uniform(0.0, 2.0 * np.pi)
    wander = 1.0 + profile.wander_amplitude * np.sin(
        2.0 * np.pi * days / profile.wander_period_days + phase
    )
    weekday = np.asarray(profile.weekday_factors, dtype=np.float64)[dow]
    shape = daily_shape(profile, hour_of_day, weekend)
    n_days = int(day_index[-1]) + 1 if n else 0
    day_jitter = _ar1(rng, n_days, profile.day_jitter, profile.day_jitter_phi)[day_index]
    hour_jitter = _ar1(rng, n, profile.hour_noise, profile.hour_noise_phi)
    level = profile.base_per_hour * growth * wander * weekday * shape
    expected: NDArray[np.float64] = level * np.exp(day_jitter + hour_jitter)
    return expected


def noisy_counts(
    mean: NDArray[np.float64], dispersion: float, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Gamma-Poisson (negative binomial) counts with the given means.

    Variance is ``mean + mean**2 / dispersion``.
    """
    rate = mean * rng.gamma(dispersion, 1.0 / dispersion, size=mean.shape)
    return rng.poisson(rate).astype(np.int64)


# --------------------------------------------------------------------------- anomaly events


def _templates(rng: np.random.Generator) -> list[_EventTemplate]:
    """The events of one split of one combo: seven of fixed character plus 0-2 extras."""
    up = bool(rng.random() < 0.5)
    shift_up = bool(rng.random() < 0.5)
    peak_shift = float(rng.uniform(3.0, 6.0)) * (1.0 if rng.random() < 0.5 else -1.0)
    ramp_hours = int(rng.integers(3, 9))
    hold_hours = int(rng.integers(0, 4))
    level_hours = int(rng.integers(4, 25))
    outage_hours = int(rng.integers(1, 4))
    big_hours = int(rng.integers(1, 3))
    templates = [
        _EventTemplate(
            "spike", big_hours, {"hours": big_hours, "factor": float(rng.uniform(2.5, 3.5))}
        ),
        _EventTemplate("spike", 2, {"hours": 2, "factor": float(rng.uniform(1.35, 1.5))}),
        _EventTemplate(
            "dip",
            outage_hours + 1,
            {
                "hours": outage_hours,
                "factor": float(rng.uniform(0.0, 0.04)),
                "recovery": float(rng.uniform(1.15, 1.4)),
            },
        ),
        _EventTemplate("dip", 1, {"hours": 1, "factor": float(rng.uniform(0.45, 0.55))}),
        _EventTemplate(
            "ramp",
            ramp_hours + hold_hours + 1,
            {
                "ramp": ramp_hours,
                "hold": hold_hours,
                "factor": float(rng.uniform(1.6, 2.3) if up else rng.uniform(0.35, 0.6)),
                "recover_hours": int(rng.integers(0, 2)),
            },
        ),
        _EventTemplate(
            "level_shift",
            level_hours,
            {
                "hours": level_hours,
                "factor": float(rng.uniform(1.25, 1.6) if shift_up else rng.uniform(0.6, 0.8)),
            },
        ),
        # 24 h of shifted shape, plus up to 23 h of slack to start it at the nightly trough.
        _EventTemplate("peak_shift", 2 * HOURS_PER_DAY - 1, {"shift": peak_shift}),
    ]
    for _ in range(int(rng.integers(0, 3))):
        pick = int(rng.integers(0, 4))
        if pick == 0:
            hours = int(rng.integers(1, 4))
            params = {"hours": hours, "factor": float(rng.uniform(1.6, 2.2))}
            templates.append(_EventTemplate("spike", hours, params))
        elif pick == 1:
            hours = int(rng.integers(2, 5))
            params = {"hours": hours, "factor": float(rng.uniform(0.55, 0.7))}
            templates.append(_EventTemplate("dip", hours, params))
        elif pick == 2:
            ramp = int(rng.integers(3, 7))
            factor = float(rng.uniform(0.4, 0.6) if up else rng.uniform(1.6, 2.0))
            params = {"ramp": ramp, "hold": 1, "factor": factor, "recover_hours": 1}
            templates.append(_EventTemplate("ramp", ramp + 2, params))
        else:
            hours = int(rng.integers(4, 13))
            factor = float(rng.uniform(0.65, 0.8) if shift_up else rng.uniform(1.3, 1.6))
            templates.append(
                _EventTemplate("level_shift", hours, {"hours": hours, "factor": factor})
            )
    return templates


def _trough_hour(profile: ComboProfile) -> int:
    """Hour of day at which the combo's weekday shape is lowest."""
    grid = np.arange(HOURS_PER_DAY, dtype=np.float64)
    return int(np.argmin(daily_shape(profile, grid, np.zeros(HOURS_PER_DAY, dtype=bool))))


def _materialise(
    template: _EventTemplate,
    start: int,
    profile: ComboProfile,
    timestamps: pd.DatetimeIndex,
) -> Event:
    """Turn a placed template into an event with per-hour multipliers."""
    p = template.params
    kind = template.kind
    if kind in ("spike", "level_shift") or (kind == "dip" and "recovery" not in p):
        hours, factor = int(p["hours"]), p["factor"]
        mult = np.full(hours, factor)
        what = f"x{factor:.2f} for {hours} h"
    elif kind == "dip":
        hours, factor = int(p["hours"]), p["factor"]
        mult = np.append(np.full(hours, factor), p["recovery"])
        what = f"outage x{factor:.2f} for {hours} h, then x{p['recovery']:.2f} catch-up"
    elif kind == "ramp":
        ramp, hold, factor = int(p["ramp"]), int(p["hold"]), p["factor"]
        steps = 1.0 + (factor - 1.0) * np.arange(1, ramp + 1) / ramp
        tail = [1.0 + (factor - 1.0) / 2.0] if int(p["recover_hours"]) else []
        mult = np.concatenate([steps, np.full(hold, factor), tail])
        direction = "up" if factor > 1 else "down"
        what = f"ramp {direction} to x{factor:.2f} over {ramp} h, hold {hold} h"
    elif kind == "peak_shift":
        trough = _trough_hour(profile)
        start += (trough - int(timestamps[start].hour)) % HOURS_PER_DAY
        shift = p["shift"]
        idx = np.arange(start, start + HOURS_PER_DAY)
        ts = timestamps[idx]
        hod = ts.hour.to_numpy().astype(np.float64)
        weekend = ts.dayofweek.to_numpy() >= 5
        # ease in and out over three hours so the day has no seam
        ease = np.minimum(1.0, np.minimum(np.arange(1, 25), np.arange(24, 0, -1)) / 3.0)
        shifted = daily_shape(profile, (hod - shift * ease) % HOURS_PER_DAY, weekend)
        ratio = shifted / daily_shape(profile, hod, weekend)
        changed = np.flatnonzero(np.abs(ratio - 1.0) >= PEAK_SHIFT_LABEL_MIN)
        first, last = int(changed[0]), int(changed[-1])
        start += first
        mult = ratio[first : last + 1]
        what = f"daily peak shifted {shift:+.1f} h (x{mult.min():.2f}..x{mult.max():.2f})"
    else:  # pragma: no cover - templates only use the kinds above
        raise ValueError(f"unknown anomaly kind {kind!r}")
    return Event(kind, start, np.asarray(mult, dtype=np.float64), what)


def place_events(
    profile: ComboProfile,
    timestamps: pd.DatetimeIndex,
    bounds: tuple[int, int],
    split: str,
    rng: np.random.Generator,
) -> list[Event]:
    """Draw and place the labelled events of one split of one combo.

    The events' reserved spans are laid out in a random order, separated by at least
    ``MIN_EVENT_GAP_HOURS``; the remaining slack is cut at random points, so every
    layout that respects the separation is possible.

    Parameters
    ----------
    profile
        The combo.
    timestamps
        All hourly timestamps of the series.
    bounds
        Half-open hour-index range of the split.
    split
        Split name (for messages).
    rng
        The combo's generator for this split's events.

    Returns
    -------
    list[Event]
        Events in time order.

    Raises
    ------
    ValueError
        The split is too short to hold the seven events of fixed character.
    """
    templates = _templates(rng)
    first = bounds[0] + EVENT_MARGIN_START_HOURS
    room = bounds[1] - EVENT_MARGIN_END_HOURS - first

    def needed(ts: Sequence[_EventTemplate]) -> int:
        return sum(t.reserve for t in ts) + (len(ts) - 1) * MIN_EVENT_GAP_HOURS

    while len(templates) > 7 and needed(templates) > room:
        templates.pop()
    if needed(templates) > room:
        days = -(-(needed(templates) + EVENT_MARGIN_START_HOURS + EVENT_MARGIN_END_HOURS) // 24)
        raise ValueError(
            f"split {split!r} of {profile.combo} has {bounds[1] - bounds[0]} hours: too short to "
            f"place {len(templates)} events {MIN_EVENT_GAP_HOURS} h apart; use at least "
            f"{days} days"
        )
    order = rng.permutation(len(templates))
    templates = [templates[int(i)] for i in order]
    slack = room - needed(templates)
    cuts = np.sort(rng.integers(0, slack + 1, size=len(templates)))
    events: list[Event] = []
    offset = first
    for template, cut in zip(templates, cuts, strict=True):
        events.append(_materialise(template, offset + int(cut), profile, timestamps))
        offset += template.reserve + MIN_EVENT_GAP_HOURS
    return events


def place_gaps(
    bounds: tuple[int, int],
    events: Sequence[Event],
    rng: np.random.Generator,
) -> NDArray[np.int64]:
    """Hour indices to drop from one split: 2-3 single hours and one run of 3-6 hours.

    Gaps keep ``GAP_CLEARANCE_HOURS`` away from events, 2 h away from the split's edges
    and 3 h away from each other.
    """
    lo, hi = bounds
    free = np.ones(hi - lo, dtype=bool)
    free[:2] = False
    free[-2:] = False
    for event in events:
        a = max(lo, event.start - GAP_CLEARANCE_HOURS) - lo
        b = min(hi, event.end + GAP_CLEARANCE_HOURS + 1) - lo
        free[max(a, 0) : max(b, 0)] = False
    lengths = [int(rng.integers(3, 7))] + [1] * int(rng.integers(2, 4))
    dropped: list[int] = []
    for length in lengths:
        for _ in range(10_000):
            s = int(rng.integers(0, hi - lo - length + 1))
            if free[s : s + length].all():
                dropped.extend(range(lo + s, lo + s + length))
                free[max(0, s - 3) : s + length + 3] = False
                break
        else:
            raise ValueError(f"no room for a {length}-hour data gap in hours {lo}..{hi}")
    return np.asarray(sorted(dropped), dtype=np.int64)


# --------------------------------------------------------------------------- assembly


def generate_combo(profile: ComboProfile, plan: SplitPlan, seed: int) -> pd.DataFrame:
    """All rows of one combo, in the output schema (gap hours already removed).

    Parameters
    ----------
    profile
        The combo.
    plan
        Start and split lengths.
    seed
        The global seed; the combo derives its own streams from it and its name.

    Returns
    -------
    pandas.DataFrame
        Columns ``COLUMNS``, sorted by timestamp.
    """
    streams = [np.random.default_rng(s) for s in combo_rng_seed(seed, profile.combo).spawn(8)]
    level_rng, noise_rng = streams[0], streams[1]
    timestamps = pd.date_range(plan.start, periods=plan.hours, freq="h", tz="UTC")
    mean = expected_counts(profile, timestamps, level_rng)

    multiplier = np.ones(plan.hours, dtype=np.float64)
    kind = np.full(plan.hours, "", dtype=object)
    event_id = np.full(plan.hours, "", dtype=object)
    split = np.full(plan.hours, "", dtype=object)
    dropped: list[NDArray[np.int64]] = []
    for i, (name, bounds) in enumerate(plan.bounds().items()):
        split[bounds[0] : bounds[1]] = name
        events_rng, gaps_rng = streams[2 + 2 * i], streams[3 + 2 * i]
        events = (
            [] if name == "train" else place_events(profile, timestamps, bounds, name, events_rng)
        )
        for k, event in enumerate(events, start=1):
            span = slice(event.start, event.end + 1)
            multiplier[span] = event.multipliers
            kind[span] = event.kind
            event_id[span] = f"{profile.combo}-{name}-{k:02d}"
            log.debug(
                "%s %s-%02d %s at %s: %s",
                profile.combo,
                name,
                k,
                event.kind,
                timestamps[event.start].isoformat(),
                event.description,
            )
        dropped.append(place_gaps(bounds, events, gaps_rng))

    counts = noisy_counts(mean * multiplier, profile.dispersion, noise_rng)
    keep = np.ones(plan.hours, dtype=bool)
    keep[np.concatenate(dropped)] = False
    frame = pd.DataFrame(
        {
            "timestamp": timestamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "combo": profile.combo,
            "network": profile.network,
            "txn_type": profile.txn_type,
            "count": counts,
            "is_anomaly": (event_id != "").astype(np.int64),
            "anomaly_type": kind,
            "event_id": event_id,
            "split": split,
        },
        columns=list(COLUMNS),
    )
    return frame[keep].reset_index(drop=True)


def generate_dataset(
    plan: SplitPlan,
    seed: int = DEFAULT_SEED,
    profiles: Sequence[ComboProfile] = DEFAULT_PROFILES,
) -> pd.DataFrame:
    """The whole dataset: every combo, sorted by combo then timestamp.

    Parameters
    ----------
    plan
        Start and split lengths.
    seed
        The global seed.
    profiles
        The combos to generate (names must be unique).

    Returns
    -------
    pandas.DataFrame
        Columns ``COLUMNS``.
    """
    names = [p.combo for p in profiles]
    if len(set(names)) != len(names):
        raise ValueError(f"combo names must be unique, got {names}")
    frames = [generate_combo(p, plan, seed) for p in sorted(profiles, key=lambda p: p.combo)]
    return pd.concat(frames, ignore_index=True)


def summarize(frame: pd.DataFrame, plan: SplitPlan) -> pd.DataFrame:
    """Events per kind, labelled hours and missing hours, per split and combo."""
    rows = []
    for (split, combo), part in frame.groupby(["split", "combo"], sort=False):
        days = {"train": plan.train_days, "val": plan.val_days, "test": plan.test_days}[str(split)]
        labelled = part[part["is_anomaly"] == 1]
        kinds = labelled.drop_duplicates("event_id")["anomaly_type"].value_counts()
        row: dict[str, object] = {"split": split, "combo": combo}
        row.update({k: int(kinds.get(k, 0)) for k in KINDS})
        row["events"] = int(labelled["event_id"].nunique())
        row["anomalous_hours"] = len(labelled)
        row["missing_hours"] = days * HOURS_PER_DAY - len(part)
        rows.append(row)
    out = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(SPLITS)}
    return out.sort_values(
        ["split", "combo"], key=lambda c: c.map(order) if c.name == "split" else c
    )


def write_csv(frame: pd.DataFrame, output: Path) -> None:
    """Write atomically (temp file beside it, then rename), ``\\n`` line endings."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            frame.to_csv(handle, index=False, lineterminator="\n")
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- command line


def _days(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of days, got {text!r}")
    return value


def _start(text: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD)") from exc
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts != ts.normalize():
        raise argparse.ArgumentTypeError(f"start must be midnight UTC, got {text!r}")
    return ts


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="generate_transactions.py",
        description=(
            "Synthesise seeded hourly transaction counts for the demo combos "
            "(Accel_CMP, Accel_nopin, Star_CMP, Star_nopin) with labelled anomalies in the "
            "val and test splits and unlabelled data gaps. See data/README.md."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    split = sub.add_parser(
        "split",
        help="write one CSV with train/val/test splits, in that time order",
        description=(
            "Write one CSV (timestamp, combo, network, txn_type, count, is_anomaly, "
            "anomaly_type, event_id, split), split by time into train, val and test. "
            "Train is clean; val and test hold 7-9 labelled events per combo, >= 48 h "
            "apart. Missing hours are absent rows. Same seed, same bytes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    split.add_argument("--log-level", default="INFO", help="logging level")
    split.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="CSV to write")
    split.add_argument("--seed", type=int, default=DEFAULT_SEED, help="global seed")
    split.add_argument("--start", type=_start, default=DEFAULT_START, help="first day (UTC)")
    split.add_argument("--train-days", type=_days, default=98, help="days of training data")
    split.add_argument("--val-days", type=_days, default=28, help="days of validation data")
    split.add_argument("--test-days", type=_days, default=28, help="days of test data")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    plan = SplitPlan(args.start, args.train_days, args.val_days, args.test_days)
    if plan.train_days < 12 * 7:
        log.warning("only %d training days: fewer than 12 weeks of weekly pattern", plan.train_days)
    try:
        frame = generate_dataset(plan, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    write_csv(frame, args.output)
    size_kb = args.output.stat().st_size / 1024
    log.info(
        "wrote %s: %d rows, %d combos, %.0f KiB (seed %d, start %s)",
        args.output,
        len(frame),
        frame["combo"].nunique(),
        size_kb,
        args.seed,
        plan.start.date(),
    )
    summary = summarize(frame, plan)
    for line in summary.to_string(index=False).splitlines():
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
