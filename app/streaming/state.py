"""Per-combo sliding-window state and its pure update rule, ``advance``.

The Spark job keeps one ``ComboWindowState`` per combo in its state store; the offline
scorer (``python -m app.score``) runs the very same ``advance`` over a CSV, hour by
hour, so the stream and the batch see identical windows.  Nothing here imports Spark,
Kafka or torch, and nothing reads the clock.

Rules (TECHNICAL.md, "Window state"):

- Rows of one call are sorted by time first, so out-of-order arrival inside a
  micro-batch is harmless.
- A row for a step at or before the newest step already accepted is **duplicate**
  (same step) or **late** (older step); it does not touch the state and is reported so
  the job can dead-letter it with that reason.
- A gap of missing steps is reported as ``missing`` emissions (at most
  ``max_missing_report`` of them) and enters the window as NaN (the detectors mask
  them).  A gap longer than ``max_gap_steps`` resets the window: the series warms up
  again.
- A step is ``ready`` (scored) once ``window`` consecutive steps since the last reset
  are in the window and its own value is present; before that it is ``warming_up``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

Status = Literal["ready", "warming_up", "missing", "duplicate", "late"]


@dataclass(frozen=True)
class StepCount:
    """One observed value: ``step`` is epoch seconds // step length (epoch hours for 1 h)."""

    combo: str
    step: int
    count: float
    ref: int = -1  # the caller's handle on the source record (echoed in duplicate/late emissions)


@dataclass(frozen=True)
class Emission:
    """What ``advance`` says about one step of one combo."""

    combo: str
    step: int
    status: Status
    count: float | None
    window: tuple[float, ...] | None = None  # oldest first, NaN = missing; only when ready
    ref: int = -1

    def to_record(self) -> dict[str, object]:
        """The emission as the row the scorer reads (the window as text, see ``format_window``).

        Examples
        --------
        >>> Emission("A", 5, "ready", 2.0, (1.0, 2.0)).to_record()["window_values"]
        '1.0,2.0'
        """
        return {
            "combo": self.combo,
            "step": self.step,
            "status": self.status,
            "count": self.count,
            "window_values": None if self.window is None else format_window(self.window),
        }


def format_window(values: Sequence[float]) -> str:
    """A window as text (exact: ``repr`` of each float; ``nan`` for missing hours).

    Examples
    --------
    >>> format_window([1.0, float("nan"), 3.5])
    '1.0,nan,3.5'
    >>> parse_window(format_window([0.1, 2.0])) == [0.1, 2.0]
    True
    """
    return ",".join(repr(float(v)) for v in values)


def parse_window(text: str) -> list[float]:
    """Inverse of ``format_window`` (an empty text is an empty window)."""
    return [float(v) for v in text.split(",")] if text else []


@dataclass(frozen=True)
class ComboWindowState:
    """The last ``window`` values of one combo and where its current run started.

    ``values`` holds at most ``window`` values, oldest first, NaN for missing steps.
    ``run_length`` counts steps since the last reset (missing steps included).
    """

    combo: str
    last_step: int | None = None
    values: tuple[float, ...] = ()
    run_length: int = 0

    def to_row(self) -> tuple[str, int, str, int]:
        """Flat tuple for Spark's state schema (the window is text: no array-typed state).

        Examples
        --------
        >>> s = ComboWindowState("A", 10, (1.0, float("nan"), 3.5), 3)
        >>> ComboWindowState.from_row(s.to_row()) == s or s.to_row()
        ('A', 10, '1.0,nan,3.5', 3)
        """
        last = -1 if self.last_step is None else self.last_step
        return (self.combo, last, format_window(self.values), self.run_length)

    @classmethod
    def from_row(cls, row: Sequence[object]) -> ComboWindowState:
        combo, last, values, run = row
        last_i = int(last)  # type: ignore[call-overload]
        parsed = tuple(parse_window(str(values)))
        return cls(str(combo), None if last_i < 0 else last_i, parsed, int(run))  # type: ignore[call-overload]


def advance(
    state: ComboWindowState,
    rows: Sequence[StepCount],
    *,
    window: int,
    max_gap_steps: int,
    max_missing_report: int = 168,
) -> tuple[ComboWindowState, list[Emission]]:
    """Feed one combo's new rows into its state; return the new state and one emission per step.

    Parameters
    ----------
    state
        The combo's state before these rows (``ComboWindowState(combo)`` when new).
    rows
        New observations of this combo, in any order.
    window
        Window length W; a step is ready when W steps since the last reset are known.
    max_gap_steps
        Longest gap (missing steps) bridged with NaN; a longer one resets the window.
    max_missing_report
        At most this many ``missing`` emissions for one gap.

    Examples
    --------
    >>> s = ComboWindowState("A")
    >>> s, out = advance(s, [StepCount("A", t, 10.0) for t in (2, 0, 1)], window=2, max_gap_steps=3)
    >>> [(e.step, e.status) for e in out]
    [(0, 'warming_up'), (1, 'ready'), (2, 'ready')]
    >>> s, out = advance(s, [StepCount("A", 4, 5.0), StepCount("A", 2, 1.0)], window=2,
    ...                  max_gap_steps=3)
    >>> [(e.step, e.status) for e in out]
    [(2, 'duplicate'), (3, 'missing'), (4, 'ready')]
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    emissions: list[Emission] = []
    last, values, run = state.last_step, list(state.values), state.run_length
    for row in sorted(rows, key=lambda r: r.step):
        if row.combo != state.combo:
            raise ValueError(f"row for combo {row.combo!r} fed to the state of {state.combo!r}")
        if last is not None and row.step <= last:
            status: Status = "duplicate" if row.step == last else "late"
            emissions.append(Emission(row.combo, row.step, status, row.count, ref=row.ref))
            continue
        if last is not None:
            gap = row.step - last - 1
            for k in range(min(gap, max_missing_report)):
                emissions.append(Emission(row.combo, last + 1 + k, "missing", None))
            if gap > max_gap_steps:
                values, run = [], 0
            else:
                values.extend([math.nan] * gap)
                run += gap
        values.append(float(row.count))
        values = values[-window:]
        run += 1
        last = row.step
        if run >= window:
            emissions.append(
                Emission(row.combo, row.step, "ready", row.count, tuple(values), ref=row.ref)
            )
        else:
            emissions.append(Emission(row.combo, row.step, "warming_up", row.count, ref=row.ref))
    new_state = replace(state, last_step=last, values=tuple(values), run_length=min(run, window))
    return new_state, emissions


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
