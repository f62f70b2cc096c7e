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
- A step more than ``max_ahead_steps`` after the newest accepted step is **held**, not
  applied: the combo's next new row decides.  A next row after the held step confirms
  the jump (an outage ended: the held step is applied, then the row); a next row before
  it refutes it (the held step is reported ``ahead`` with its reason, and the state is as
  if it never came).  So one bad future hour costs only itself, never the real hours
  after it, and on time-ordered data no hour is lost (at most a combo's newest step waits
  for the next one); the first step of a combo is never held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

Status = Literal["ready", "warming_up", "missing", "duplicate", "late", "ahead"]


@dataclass(frozen=True)
class StepCount:
    """One observed value: ``step`` is epoch seconds // step length (epoch hours for 1 h).

    ``ref`` and ``source`` are the caller's handles on the source record, echoed in the
    emissions of this row; ``source`` (opaque text) is also kept in the state while the row
    is held, so a row refuted in a later call can still be traced to its message.
    """

    combo: str
    step: int
    count: float
    ref: int = -1
    source: str = ""


@dataclass(frozen=True)
class Emission:
    """What ``advance`` says about one step of one combo."""

    combo: str
    step: int
    status: Status
    count: float | None
    window: tuple[float, ...] | None = None  # oldest first, NaN = missing; only when ready
    ref: int = -1
    source: str = ""
    reason: str | None = None  # only for "ahead": why it was rejected

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
            "reason": self.reason,
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
    held: StepCount | None = None  # a step far ahead of last_step, waiting for the next row

    def to_row(self) -> tuple[str, int, str, int, int, float, str]:
        """Flat tuple for Spark's state schema (the window is text: no array-typed state).

        Examples
        --------
        >>> s = ComboWindowState("A", 10, (1.0, float("nan"), 3.5), 3)
        >>> ComboWindowState.from_row(s.to_row()) == s or s.to_row()
        ('A', 10, '1.0,nan,3.5', 3, -1, 0.0, '')
        """
        last = -1 if self.last_step is None else self.last_step
        held = self.held
        return (
            self.combo,
            last,
            format_window(self.values),
            self.run_length,
            -1 if held is None else held.step,
            0.0 if held is None else float(held.count),
            "" if held is None else held.source,
        )

    @classmethod
    def from_row(cls, row: Sequence[object]) -> ComboWindowState:
        combo, last, values, run = row[:4]
        last_i = int(last)  # type: ignore[call-overload]
        parsed = tuple(parse_window(str(values)))
        held = None
        if len(row) >= 7 and int(row[4]) >= 0:  # type: ignore[call-overload]
            held = StepCount(str(combo), int(row[4]), float(row[5]), source=str(row[6] or ""))  # type: ignore[call-overload, arg-type]
        return cls(str(combo), None if last_i < 0 else last_i, parsed, int(run), held)  # type: ignore[call-overload]


def advance(
    state: ComboWindowState,
    rows: Sequence[StepCount],
    *,
    window: int,
    max_gap_steps: int,
    max_ahead_steps: int | None,
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
    max_ahead_steps
        A step further than this after the newest accepted one is held until the next new
        row confirms or refutes it (module docstring); None = no limit (every step applies).
        The stream and ``app.scoring`` pass the same ``MAX_AHEAD_STEPS``.
    max_missing_report
        At most this many ``missing`` emissions for one gap.

    Examples
    --------
    >>> s = ComboWindowState("A")
    >>> s, out = advance(s, [StepCount("A", t, 10.0) for t in (2, 0, 1)], window=2,
    ...                  max_gap_steps=3, max_ahead_steps=3)
    >>> [(e.step, e.status) for e in out]
    [(0, 'warming_up'), (1, 'ready'), (2, 'ready')]
    >>> s, out = advance(s, [StepCount("A", 4, 5.0), StepCount("A", 2, 1.0)], window=2,
    ...                  max_gap_steps=3, max_ahead_steps=3)
    >>> [(e.step, e.status) for e in out]
    [(2, 'duplicate'), (3, 'missing'), (4, 'ready')]
    >>> s, out = advance(s, [StepCount("A", 28, 9.0)], window=2, max_gap_steps=3,
    ...                  max_ahead_steps=3)
    >>> out, s.held.step
    ([], 28)
    >>> s, out = advance(s, [StepCount("A", 5, 6.0)], window=2, max_gap_steps=3,
    ...                  max_ahead_steps=3)
    >>> [(e.step, e.status) for e in out], s.held
    ([(28, 'ahead'), (5, 'ready')], None)
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    emissions: list[Emission] = []
    cursor = _Cursor(
        state.last_step,
        list(state.values),
        state.run_length,
        window,
        max_gap_steps,
        max_missing_report,
    )
    held = state.held
    for row in sorted(rows, key=lambda r: r.step):
        if row.combo != state.combo:
            raise ValueError(f"row for combo {row.combo!r} fed to the state of {state.combo!r}")
        repeat = _repeat_status(row.step, cursor.last, held)
        if repeat is not None:
            emissions.append(
                Emission(row.combo, row.step, repeat, row.count, ref=row.ref, source=row.source)
            )
            continue
        if held is not None:
            if row.step > held.step:  # the feed went on past the held step: a real jump
                cursor.accept(held, emissions)
            else:  # the next row came before it: the held step was a bad timestamp
                emissions.append(_refuted(held, cursor.last, max_ahead_steps))
            held = None
        last = cursor.last
        if last is not None and max_ahead_steps is not None and row.step - last > max_ahead_steps:
            held = row
        else:
            cursor.accept(row, emissions)
    new_state = replace(
        state,
        last_step=cursor.last,
        values=tuple(cursor.values),
        run_length=min(cursor.run, window),
        held=held,
    )
    return new_state, emissions


@dataclass(slots=True)
class _Cursor:
    """Where one combo's window stands while ``advance`` feeds it rows (changed in place)."""

    last: int | None  # the newest accepted step
    values: list[float]  # at most ``window``, oldest first, NaN = missing
    run: int  # steps since the last reset (not capped at ``window``)
    window: int
    max_gap_steps: int
    max_missing_report: int

    def accept(self, row: StepCount, emissions: list[Emission]) -> None:
        """Accept ``row`` (a step after ``last``): report the gap before it as ``missing``
        (bridged with NaN, or a reset when longer than ``max_gap_steps``), append its value
        and emit its ``ready``/``warming_up`` status; add both to ``emissions``."""
        last = self.last
        if last is not None:
            gap = row.step - last - 1
            for k in range(min(gap, self.max_missing_report)):
                emissions.append(Emission(row.combo, last + 1 + k, "missing", None))
            if gap > self.max_gap_steps:
                self.values, self.run = [], 0
            else:
                self.values.extend([math.nan] * gap)
                self.run += gap
        values = self.values
        values.append(float(row.count))
        if len(values) > self.window:  # trimmed in place: no copy of the window per row
            del values[: len(values) - self.window]
        self.run += 1
        self.last = row.step
        status: Status = "ready" if self.run >= self.window else "warming_up"
        emissions.append(
            Emission(
                row.combo,
                row.step,
                status,
                row.count,
                tuple(values) if status == "ready" else None,
                ref=row.ref,
                source=row.source,
            )
        )


def _repeat_status(step: int, last: int | None, held: StepCount | None) -> Status | None:
    """``"duplicate"`` or ``"late"`` for a step at or before the newest accepted one (or
    at the held one); None for a new step.

    Examples
    --------
    >>> _repeat_status(5, 5, None), _repeat_status(4, 5, None), _repeat_status(6, 5, None)
    ('duplicate', 'late', None)
    >>> _repeat_status(9, 5, StepCount("A", 9, 1.0))
    'duplicate'
    """
    if last is not None and step <= last:
        return "duplicate" if step == last else "late"
    if held is not None and step == held.step:
        return "duplicate"
    return None


def _refuted(held: StepCount, last: int | None, max_ahead_steps: int | None) -> Emission:
    """The ``ahead`` emission of a held step that the combo's next row came before."""
    ahead = held.step - (last if last is not None else held.step)
    reason = (
        f"too far ahead of this combo: {ahead} steps after its newest accepted step "
        f"(MAX_AHEAD_STEPS={max_ahead_steps}), and the combo's next hour came before it"
    )
    return Emission(
        held.combo,
        held.step,
        "ahead",
        held.count,
        ref=held.ref,
        source=held.source,
        reason=reason,
    )
