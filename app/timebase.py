"""Time in the data's own step: the one place where periods that mean something in time
(a day, a week, the longest bridged gap, the spacing of injected anomalies, warm-up)
become counts of steps of a series' frequency.

Training, ``app.score``, the stream (``STEP_SECONDS``), evaluation and the dashboard all
convert through :class:`TimeBase`, so a 5-minute series gets a day of 288 steps
everywhere and an hourly one a day of 24.

Pure Python and pandas: nothing here imports Spark, Kafka, Dash or torch.

Examples
--------
>>> tb = TimeBase(300)
>>> tb.day, tb.week, tb.steps("24h"), tb.describe(288)
(288, 2016, 288, '288 steps (1 day)')
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from app.errors import DataError

SECONDS_PER_DAY = 86_400
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY


def parse_freq(freq: str) -> pd.Timedelta:
    """The fixed step length of a pandas frequency string.

    Parameters
    ----------
    freq
        A fixed-length pandas frequency such as ``"1h"``, ``"30min"`` or ``"5min"``.

    Returns
    -------
    pandas.Timedelta
        The step.

    Raises
    ------
    ValueError
        ``freq`` is not a frequency, is not of fixed length (``"MS"``) or is not positive.

    Examples
    --------
    >>> parse_freq("30min")
    Timedelta('0 days 00:30:00')
    >>> int(parse_freq("1h").total_seconds())
    3600
    """
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"freq={freq!r} is not a pandas frequency (try '1h' or '30min')") from exc
    if not isinstance(offset, pd.offsets.Tick):
        raise ValueError(f"freq={freq!r} has no fixed length; use a fixed one like '1h' or '30min'")
    step = pd.Timedelta(offset)
    if step <= pd.Timedelta(0):
        raise ValueError(f"freq={freq!r} must be a positive step")
    return step


@dataclass(frozen=True)
class TimeBase:
    """Conversions between durations and steps of one grid step length (seconds)."""

    step_seconds: int

    def __post_init__(self) -> None:
        if int(self.step_seconds) != self.step_seconds or self.step_seconds < 1:
            raise DataError(f"step_seconds must be a whole number >= 1, got {self.step_seconds!r}")

    @classmethod
    def from_freq(cls, freq: str) -> TimeBase:
        """``TimeBase.from_freq("5min").step_seconds == 300``."""
        return cls(int(parse_freq(freq).total_seconds()))

    @property
    def day(self) -> int:
        """Steps per day (at least 1)."""
        return max(1, round(SECONDS_PER_DAY / self.step_seconds))

    @property
    def week(self) -> int:
        """Steps per week: seven days of steps."""
        return 7 * self.day

    @property
    def step_hours(self) -> float:
        return self.step_seconds / 3600

    def steps(self, duration: Any, *, minimum: int = 0) -> int:
        """Whole steps in ``duration`` (a pandas Timedelta, ``"24h"``, or seconds), rounded
        up so that a period is never shorter than asked, and at least ``minimum``.

        Examples
        --------
        >>> TimeBase(3600).steps("90min"), TimeBase(60).steps(3600), TimeBase(3600).steps(0)
        (2, 60, 0)
        """
        seconds = (
            float(duration)
            if isinstance(duration, int | float)
            else pd.Timedelta(duration).total_seconds()
        )
        if seconds < 0:
            raise DataError(f"a duration must be >= 0, got {duration!r}")
        return max(int(minimum), math.ceil(seconds / self.step_seconds - 1e-9))

    def hours_to_steps(self, hours: float) -> int:
        """Steps in ``hours`` hours (``MAX_GAP_HOURS``, ``--max-gap-hours``)."""
        return self.steps(float(hours) * 3600)

    def duration(self, steps: int) -> pd.Timedelta:
        return pd.Timedelta(seconds=int(steps) * self.step_seconds)

    def describe(self, steps: int) -> str:
        """``"288 steps (1 day)"``: a step count with the time it spans, for messages."""
        span = self.duration(steps)
        return f"{int(steps)} steps ({_human(span)})"


def _human(span: pd.Timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("week", SECONDS_PER_WEEK), ("day", SECONDS_PER_DAY), ("h", 3600)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 and unit != 'h' else ''}"
    if seconds >= SECONDS_PER_DAY:
        return f"{seconds / SECONDS_PER_DAY:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def infer_freq(timestamps: pd.Series, keys: pd.Series | None = None) -> str:
    """The grid step of a series' timestamps: the most common positive difference between
    consecutive distinct timestamps of each key (ties → the smaller step), as a pandas
    frequency string such as ``"5min"`` or ``"1h"``.

    Examples
    --------
    >>> ts = pd.Series(pd.date_range("2025-01-01", periods=6, freq="5min"))
    >>> infer_freq(ts.drop(index=3))
    '5min'
    """
    frame = pd.DataFrame({"t": pd.to_datetime(timestamps, utc=True)})
    frame["k"] = "" if keys is None else keys.to_numpy()
    diffs = []
    for _, part in frame.groupby("k", sort=False):
        t = part["t"].drop_duplicates().sort_values()
        d = t.diff().dropna()
        diffs.append(d[d > pd.Timedelta(0)])
    allowed = pd.concat(diffs) if diffs else pd.Series(dtype="timedelta64[ns]")
    if allowed.empty:
        raise DataError(
            "cannot infer the data's time step: fewer than two distinct timestamps per "
            "series; pass --freq (e.g. 1h, 5min)"
        )
    counts = allowed.value_counts()
    top = counts[counts == counts.max()].index.min()
    seconds = round(pd.Timedelta(top).total_seconds())
    if seconds < 1:
        raise DataError(f"inferred time step {top} is below one second; pass --freq")
    return freq_string(seconds)


def freq_string(seconds: int) -> str:
    """``300 -> "5min"``, ``3600 -> "1h"``, ``86400 -> "1D"``, ``90 -> "90s"``."""
    if seconds % SECONDS_PER_DAY == 0:
        return f"{seconds // SECONDS_PER_DAY}D"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}min"
    return f"{seconds}s"


def window_seed(combo: str, step: int, seed: int = 0) -> int:
    """A stable 63-bit seed for the window of ``combo`` ending at ``step``.

    The detectors draw a window's latent samples from this seed alone, so its score
    does not depend on which other windows share its batch.

    Examples
    --------
    >>> window_seed("Accel_CMP", 480_000) == window_seed("Accel_CMP", 480_000)
    True
    >>> window_seed("Accel_CMP", 480_000) != window_seed("Accel_CMP", 480_001)
    True
    """
    digest = hashlib.blake2b(f"{seed}|{combo}|{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
