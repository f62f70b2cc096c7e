"""Anomaly-detection metrics: point-wise, event-level, detection delay, AUPRC.

Pure functions on numpy arrays; every result is JSON-serialisable (plain ``int``/``float``,
``None`` where a ratio is undefined, never NaN).

Conventions
-----------
* Score direction: **higher score = more anomalous**; a point is flagged when
  ``score > threshold``. A NaN score is never flagged.
* ``valid`` (optional boolean mask): positions where it is False (for example missing hours, or a
  warm-up period shared by all detectors) are not scored at all: a flag there is ignored and a
  label there is neither a hit nor a miss.
* Events are inclusive index ranges ``(start, end)``.
* Ratios: ``precision = tp / (tp + fp)`` is ``None`` when nothing was flagged; ``recall =
  tp / (tp + fn)`` is ``None`` when there is nothing to find; ``f1 = 2tp / (2tp + fp + fn)``
  (the harmonic mean of the two where both exist, and 0 when there is something to find but
  nothing correct was flagged) is ``None`` only when there is neither anything to find nor any
  flag.

Event-level rules (DESIGN.md §7)
--------------------------------
* An event is **detected** if at least one (valid) flag falls inside its range.
* Flags outside every event are merged per contiguous run of flagged indices; each run is one
  **false alarm**.
* ``event precision = detected / (detected + false_alarms)`` (detected events count as true
  alarms, one per event however many flags it holds), ``event recall = detected / n_events``,
  ``event f1 = 2 P R / (P + R) = 2 detected / (detected + false_alarms + n_events)``.
* The **delay** of a detected event is ``index of its first flag - event start`` in steps
  (``evaluate_series`` converts it to hours).

Point-adjusted F1 (every point of an event counts as found when one point is flagged) is
reported too, but it is **optimistic**: a single lucky flag in a long event earns full recall.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import average_precision_score

from app.errors import ContractError

logger = logging.getLogger(__name__)

Event = tuple[int, int]


class PointMetrics(TypedDict):
    """Point-wise counts and ratios (ratios are ``None`` where undefined)."""

    precision: float | None
    recall: float | None
    f1: float | None
    tp: int
    fp: int
    fn: int


class EventMetrics(TypedDict):
    """Event-level counts and ratios; ``delays`` in steps, one per detected event."""

    precision: float | None
    recall: float | None
    f1: float | None
    n_events: int
    detected: int
    false_alarms: int
    delays: list[int]


# --------------------------------------------------------------------------- helpers


def _bool_array(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ContractError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "biuf":
        raise ContractError(f"{name} must be boolean or numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ContractError(f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(arr))[0])}")
    return arr.astype(bool)


def _valid_mask(valid: ArrayLike | None, n: int) -> NDArray[np.bool_]:
    if valid is None:
        return np.ones(n, dtype=bool)
    mask = _bool_array(valid, "valid")
    if mask.shape[0] != n:
        raise ContractError(f"valid has length {mask.shape[0]}, expected {n}")
    return mask


def _same_length(n: int, **arrays: NDArray[Any]) -> None:
    for name, arr in arrays.items():
        if arr.shape[0] != n:
            raise ContractError(f"{name} has length {arr.shape[0]}, expected {n}")


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _ratios(tp: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def _point_from_counts(tp: int, fp: int, fn: int) -> PointMetrics:
    precision, recall, f1 = _ratios(tp, fp, fn)
    return PointMetrics(precision=precision, recall=recall, f1=f1, tp=tp, fp=fp, fn=fn)


def _event_from_counts(
    n_events: int, detected: int, false_alarms: int, delays: list[int]
) -> EventMetrics:
    precision, recall, f1 = _ratios(detected, false_alarms, n_events - detected)
    return EventMetrics(
        precision=precision,
        recall=recall,
        f1=f1,
        n_events=n_events,
        detected=detected,
        false_alarms=false_alarms,
        delays=delays,
    )


def _events_array(events: Sequence[Event], n: int) -> NDArray[np.int64]:
    arr = np.asarray(list(events), dtype=np.int64).reshape(-1, 2)
    if arr.size and (
        (arr[:, 0] < 0).any() or (arr[:, 1] >= n).any() or (arr[:, 0] > arr[:, 1]).any()
    ):
        bad = [(int(s), int(e)) for s, e in arr if s < 0 or e >= n or s > e]
        raise ContractError(f"events {bad[:5]} are not inclusive ranges inside [0, {n - 1}]")
    return arr


def flags_from_scores(scores: ArrayLike, threshold: float) -> NDArray[np.bool_]:
    """Flag ``score > threshold``; NaN scores are never flagged.

    Examples
    --------
    >>> flags_from_scores([0.5, np.nan, 2.0, 1.0], 1.0).tolist()
    [False, False, True, False]
    """
    arr = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(arr > float(threshold), dtype=bool)


# --------------------------------------------------------------------------- metrics


def point_metrics(
    flags: ArrayLike, labels: ArrayLike, valid: ArrayLike | None = None
) -> PointMetrics:
    """Point-wise precision, recall and F1 of boolean flags against boolean labels.

    Parameters
    ----------
    flags
        One boolean per point: True where the detector raised an alarm.
    labels
        One boolean per point: True where the point is anomalous.
    valid
        Optional mask; positions where it is False are not scored.

    Returns
    -------
    PointMetrics
        ``precision``, ``recall``, ``f1`` (``None`` where undefined, see the module docstring)
        and the counts ``tp``, ``fp``, ``fn``.

    Examples
    --------
    >>> m = point_metrics([1, 1, 0, 0], [1, 0, 1, 0])
    >>> (m["precision"], m["recall"], m["f1"], m["tp"], m["fp"], m["fn"])
    (0.5, 0.5, 0.5, 1, 1, 1)
    >>> point_metrics([1, 1, 0], [1, 0, 1], valid=[1, 0, 0])["f1"]
    1.0
    """
    f = _bool_array(flags, "flags")
    y = _bool_array(labels, "labels")
    _same_length(f.shape[0], labels=y)
    v = _valid_mask(valid, f.shape[0])
    f, y = f & v, y & v
    tp = int(np.count_nonzero(f & y))
    fp = int(np.count_nonzero(f & ~y))
    fn = int(np.count_nonzero(~f & y))
    return _point_from_counts(tp, fp, fn)


def events_from_labels(labels: ArrayLike, event_ids: ArrayLike | None = None) -> list[Event]:
    """Anomaly events as inclusive ``(start, end)`` index ranges, sorted by start.

    Parameters
    ----------
    labels
        One boolean per point (0/1 accepted), 1-D.
    event_ids
        Optional id per point (read only where ``labels`` is True). Labelled points sharing
        a non-empty id form one event spanning its first to last point (so a missing step
        inside an event does not split it, and two adjacent events with different ids stay
        apart); labelled points without an id (``""``, ``None``, ``NaN``) fall back to
        contiguous runs, as do all points when ``event_ids`` is not given.

    Examples
    --------
    >>> events_from_labels([0, 1, 1, 0, 0, 1])
    [(1, 2), (5, 5)]
    >>> events_from_labels([1, 1, 1, 0], event_ids=[7, 7, 8, -1])
    [(0, 1), (2, 2)]
    >>> events_from_labels([1, 0, 1, 0, 1], ["a", "", "a", "", ""])
    [(0, 2), (4, 4)]
    """
    y = _bool_array(labels, "labels")
    if event_ids is None:
        return _runs(y)
    ids = np.asarray(event_ids, dtype=object)
    if ids.ndim != 1 or ids.shape[0] != y.shape[0]:
        raise ContractError(f"event_ids has shape {ids.shape}, expected ({y.shape[0]},)")
    text = np.array(
        ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in ids],
        dtype=object,
    )
    named = y & (text != "")
    spans = _runs(y & ~named)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for position in np.flatnonzero(named).tolist():
        first.setdefault(text[position], position)
        last[text[position]] = position
    spans += [(first[k], last[k]) for k in first]
    return sorted(spans)


def _runs(mask: NDArray[np.bool_]) -> list[Event]:
    """Contiguous runs of True as ``(start, end)`` inclusive."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def event_metrics(
    flags: ArrayLike,
    events: Sequence[Event],
    labels: ArrayLike | None = None,
    valid: ArrayLike | None = None,
    *,
    grace_steps: int = 0,
) -> EventMetrics:
    """Event-level precision, recall, F1, false alarms and detection delays.

    Parameters
    ----------
    flags
        One boolean per point.
    events
        Inclusive ``(start, end)`` index ranges (see :func:`events_from_labels`).
    labels
        Optional point labels; when given, flagged points that are labelled anomalous but lie
        outside every listed event are not counted as false alarms (labels and events then
        disagree only if the caller built them differently).
    valid
        Optional mask: flags at invalid positions are ignored, and an event without any valid
        position is left out of ``n_events`` (it could not be scored).
    grace_steps
        Flags in the ``grace_steps`` points just after an event's end are neither detections
        nor false alarms (0 = strict, the DESIGN.md rule).

    Returns
    -------
    EventMetrics
        ``precision = detected / (detected + false_alarms)``,
        ``recall = detected / n_events``, ``f1`` their harmonic mean (``None`` where
        undefined), the counts, and ``delays`` (first flag inside the event minus its start, in
        steps, one per detected event in event order).

    Examples
    --------
    Two events, the first caught one step late, the second missed, and one false-alarm run of
    three points:

    >>> flags = [0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0]
    >>> m = event_metrics(flags, [(1, 3), (5, 6)])
    >>> (m["precision"], m["recall"], m["f1"], m["false_alarms"], m["delays"])
    (0.5, 0.5, 0.5, 1, [1])
    """
    f = _bool_array(flags, "flags")
    n = f.shape[0]
    v = _valid_mask(valid, n)
    f = f & v
    ev = _events_array(events, n)
    if grace_steps < 0:
        raise ContractError(f"grace_steps must be >= 0, got {grace_steps}")

    ev = _scorable_events(ev, v)
    caught, delays = _detections(f, ev)
    false_alarms = _false_alarm_runs(f, ev, labels, grace_steps)
    return _event_from_counts(int(ev.shape[0]), int(caught.sum()), false_alarms, delays)


def _scorable_events(ev: NDArray[np.int64], valid: NDArray[np.bool_]) -> NDArray[np.int64]:
    """The events (``(k, 2)`` inclusive ranges) with at least one valid position; the others
    cannot be scored (logged at debug level)."""
    valid_cum = np.concatenate(([0], np.cumsum(valid, dtype=np.int64)))
    if not ev.size:
        return ev
    scorable = valid_cum[ev[:, 1] + 1] - valid_cum[ev[:, 0]] > 0
    if not scorable.all():
        logger.debug("%d events without any valid point left out", int((~scorable).sum()))
    return ev[scorable]


def _detections(
    flags: NDArray[np.bool_], ev: NDArray[np.int64]
) -> tuple[NDArray[np.bool_], list[int]]:
    """Which events hold a flag, and each caught event's delay (its first flag minus its
    start, in steps, in event order).

    Examples
    --------
    >>> _detections(np.array([0, 0, 1, 0, 1], bool), np.array([[1, 3], [3, 3]]))
    (array([ True, False]), [1])
    """
    n = flags.shape[0]
    # Next flagged index at or after each position (n when none).
    idx = np.where(flags, np.arange(n, dtype=np.int64), n)
    next_flag = np.minimum.accumulate(idx[::-1])[::-1] if n else idx
    if not ev.size:
        return np.zeros(0, dtype=bool), []
    first = next_flag[ev[:, 0]]
    caught = first <= ev[:, 1]
    return caught, [int(d) for d in (first[caught] - ev[caught, 0])]


def _false_alarm_runs(
    flags: NDArray[np.bool_],
    ev: NDArray[np.int64],
    labels: ArrayLike | None,
    grace_steps: int,
) -> int:
    """Runs of consecutive flags outside every event, its ``grace_steps`` tail and every
    labelled point: each run is one false alarm.

    Examples
    --------
    >>> _false_alarm_runs(np.array([1, 1, 0, 1, 1, 0, 1], bool), np.array([[3, 3]]), None, 1)
    2
    """
    n = flags.shape[0]
    # Points covered by an event (or its grace tail, or an anomaly label) never raise a false
    # alarm; remaining flags are merged into contiguous runs.
    covered = np.zeros(n + 1, dtype=np.int64)
    if ev.size:
        np.add.at(covered, ev[:, 0], 1)
        np.add.at(covered, np.minimum(ev[:, 1] + 1 + grace_steps, n), -1)
    inside = np.cumsum(covered[:n]) > 0
    if labels is not None:
        y = _bool_array(labels, "labels")
        _same_length(n, labels=y)
        inside |= y
    outside = flags & ~inside
    return int(np.count_nonzero(outside[1:] & ~outside[:-1])) + int(n > 0 and bool(outside[0]))


def _point_adjusted_counts(
    flags: NDArray[np.bool_],
    labels: NDArray[np.bool_],
    events: Sequence[Event],
    valid: NDArray[np.bool_],
) -> PointMetrics:
    f, y = flags & valid, labels & valid
    adjusted = f.copy()
    cum = np.concatenate(([0], np.cumsum(f, dtype=np.int64)))
    for start, end in events:
        if cum[end + 1] - cum[start] > 0:
            adjusted[start : end + 1] = True
    adjusted &= valid
    return point_metrics(adjusted, y)


def point_adjusted_f1(
    flags: ArrayLike,
    labels: ArrayLike,
    event_ids: ArrayLike | None = None,
    valid: ArrayLike | None = None,
) -> float | None:
    """Point-adjusted F1 — **optimistic**, shown only beside the stricter metrics.

    Every labelled point of an event counts as detected as soon as one point of that event is
    flagged (Xu et al., 2018). One lucky flag in a long event therefore earns full recall for
    the whole event, which overstates real performance; prefer event-level F1.

    Examples
    --------
    >>> point_adjusted_f1([0, 1, 0, 0, 0], [1, 1, 1, 0, 0])
    1.0
    >>> point_metrics([0, 1, 0, 0, 0], [1, 1, 1, 0, 0])["f1"]
    0.5
    """
    f = _bool_array(flags, "flags")
    y = _bool_array(labels, "labels")
    _same_length(f.shape[0], labels=y)
    v = _valid_mask(valid, f.shape[0])
    events = events_from_labels(y, event_ids)
    return _point_adjusted_counts(f, y, events, v)["f1"]


def auprc(scores: ArrayLike, labels: ArrayLike, valid: ArrayLike | None = None) -> float | None:
    """Area under the precision-recall curve (average precision), threshold-free.

    NaN scores and invalid positions are dropped first, so compare detectors on the same
    ``valid`` mask. Returns ``None`` when no labelled anomaly (or nothing at all) is left.

    Examples
    --------
    >>> auprc([0.1, 0.9, np.nan, 0.2], [0, 1, 1, 0])
    1.0
    >>> auprc([0.1, 0.2], [0, 0]) is None
    True
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ContractError(f"scores must be 1-D, got shape {s.shape}")
    y = _bool_array(labels, "labels")
    _same_length(s.shape[0], labels=y)
    keep = _valid_mask(valid, s.shape[0]) & ~np.isnan(s)
    s, y = s[keep], y[keep]
    if not y.any():
        return None
    s = np.clip(s, -np.finfo(np.float64).max, np.finfo(np.float64).max)
    return float(average_precision_score(y, s))


class MissedEvent(TypedDict):
    """An event without a flag: where it is, and how far its strongest hour fell short."""

    event_id: str | None
    start: int
    end: int
    start_time: str | None
    steps: int
    peak_score: float | None
    threshold: float
    shortfall: float | None


def missed_events(
    scores: ArrayLike,
    threshold: float,
    events: Sequence[Event],
    valid: ArrayLike | None = None,
    *,
    event_ids: ArrayLike | None = None,
    timestamps: Sequence[Any] | None = None,
) -> list[MissedEvent]:
    """The scorable events (at least one valid point) in which no valid point is flagged.

    ``peak_score`` is the event's highest valid score (``None`` when every score there is
    NaN) and ``shortfall = threshold - peak_score``: how much lower the threshold would have
    had to be to catch it.  ``event_id`` and ``start_time`` are read at the event's start
    from ``event_ids`` / ``timestamps`` when given (``str`` of the value).

    Examples
    --------
    >>> m = missed_events([0.0, 0.5, 2.0, 9.0], 1.0, [(0, 1), (3, 3)])
    >>> [(e["start"], e["end"], e["peak_score"], e["shortfall"]) for e in m]
    [(0, 1, 0.5, 0.5)]
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0]
    v = _valid_mask(valid, n)
    ev = _events_array(events, n)
    flags = flags_from_scores(s, threshold) & v
    ids = None if event_ids is None else np.asarray(event_ids)
    out: list[MissedEvent] = []
    for start, end in ev.tolist():
        inside = slice(start, end + 1)
        if not v[inside].any() or flags[inside].any():
            continue
        seen = s[inside][v[inside] & np.isfinite(s[inside])]
        peak = float(seen.max()) if seen.size else None
        out.append(
            {
                "event_id": None if ids is None else str(ids[start]),
                "start": start,
                "end": end,
                "start_time": None if timestamps is None else str(timestamps[start]),
                "steps": end - start + 1,
                "peak_score": peak,
                "threshold": float(threshold),
                "shortfall": None if peak is None else float(threshold) - peak,
            }
        )
    return out


def _per_day(count: int, hours: float) -> float | None:
    return None if hours <= 0 else count * 24.0 / hours


def _delay_summary(delays_hours: Sequence[float]) -> tuple[float | None, float | None]:
    if not delays_hours:
        return None, None
    arr = np.asarray(delays_hours, dtype=np.float64)
    return float(np.median(arr)), float(arr.max())


def evaluate_series(
    scores: ArrayLike,
    threshold: float,
    labels: ArrayLike,
    event_ids: ArrayLike | None = None,
    valid: ArrayLike | None = None,
    step_hours: float = 1.0,
    timestamps: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """All metrics of one detector on one series (one combo), JSON-serialisable.

    Parameters
    ----------
    scores
        Raw or calibrated scores, higher = more anomalous; NaN = no score (never flagged).
    threshold
        Flag where ``score > threshold``, in the same units as ``scores``.
    labels
        Ground-truth anomaly label per point.
    event_ids
        Optional event id per point (see :func:`events_from_labels`).
    valid
        Optional mask of scored points (missing hours and a shared warm-up should be False).
    step_hours
        Hours per step, to express delays in hours.
    timestamps
        Optional time per point, only to name where each missed event starts.

    Returns
    -------
    dict
        ``{"point": PointMetrics, "event": EventMetrics, "delay_hours_median",
        "delay_hours_max", "delays_hours", "auprc", "point_adjusted": PointMetrics,
        "point_adjusted_f1" (optimistic), "n_scored", "scored_hours", "false_alarms_per_day",
        "threshold", "missed_events": [MissedEvent]}``.

    Examples
    --------
    >>> r = evaluate_series([0, 0, 5, 0, 0, 0, 0, 5, 5, 5, 0], 1.0,
    ...                     [0, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    >>> (r["event"]["precision"], r["event"]["recall"], r["delay_hours_median"])
    (0.5, 0.5, 1.0)
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ContractError(f"scores must be 1-D, got shape {s.shape}")
    if not np.isfinite(threshold):
        raise ContractError(f"threshold must be finite, got {threshold!r}")
    if not step_hours > 0:
        raise ContractError(f"step_hours must be > 0, got {step_hours!r}")
    y = _bool_array(labels, "labels")
    _same_length(s.shape[0], labels=y)
    v = _valid_mask(valid, s.shape[0])
    flags = flags_from_scores(s, threshold)
    events = events_from_labels(y, event_ids)
    point = point_metrics(flags, y, v)
    event = event_metrics(flags, events, y, v)
    delays_hours = [float(d * step_hours) for d in event["delays"]]
    median, worst = _delay_summary(delays_hours)
    adjusted = _point_adjusted_counts(flags, y, events, v)
    n_scored = int(v.sum())
    scored_hours = float(n_scored * step_hours)
    return {
        "point": point,
        "event": event,
        "delay_hours_median": median,
        "delay_hours_max": worst,
        "delays_hours": delays_hours,
        "auprc": auprc(s, y, v),
        "point_adjusted": adjusted,
        "point_adjusted_f1": adjusted["f1"],
        "n_scored": n_scored,
        "scored_hours": scored_hours,
        "false_alarms_per_day": _per_day(event["false_alarms"], scored_hours),
        "threshold": float(threshold),
        "missed_events": missed_events(
            s, threshold, events, v, event_ids=event_ids, timestamps=timestamps
        ),
    }


def aggregate(per_combo: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Micro-average :func:`evaluate_series` results over combos ("overall").

    Counts are summed (``tp``/``fp``/``fn``, detected events, false alarms, events, scored
    points, scored hours) and the ratios recomputed from the sums; delays are pooled. AUPRC
    cannot be pooled without the raw scores, so ``auprc`` is the **mean** of the defined
    per-combo values (macro-average) and ``threshold`` is ``None``.  ``missed_events`` lists
    every combo's, each with its ``combo`` added.

    Examples
    --------
    >>> a = evaluate_series([5, 0, 0], 1.0, [1, 0, 0])
    >>> b = evaluate_series([0, 5, 0], 1.0, [1, 0, 0])
    >>> o = aggregate({"a": a, "b": b})
    >>> (o["event"]["detected"], o["event"]["false_alarms"], o["point"]["f1"])
    (1, 1, 0.5)
    """
    if not per_combo:
        raise ContractError("aggregate needs at least one combo, got an empty mapping")
    tp = fp = fn = 0
    atp = afp = afn = 0
    n_events = detected = false_alarms = n_scored = 0
    scored_hours = 0.0
    delays: list[int] = []
    delays_hours: list[float] = []
    auprcs: list[float] = []
    missed: list[dict[str, Any]] = []
    for combo, result in per_combo.items():
        try:
            p, e, pa = result["point"], result["event"], result["point_adjusted"]
            tp, fp, fn = tp + p["tp"], fp + p["fp"], fn + p["fn"]
            atp, afp, afn = atp + pa["tp"], afp + pa["fp"], afn + pa["fn"]
            n_events += e["n_events"]
            detected += e["detected"]
            false_alarms += e["false_alarms"]
            delays.extend(e["delays"])
            delays_hours.extend(result["delays_hours"])
            n_scored += result["n_scored"]
            scored_hours += result["scored_hours"]
        except (KeyError, TypeError) as exc:
            raise ContractError(
                f"per_combo[{combo!r}] is not an evaluate_series result: missing {exc}"
            ) from exc
        if result.get("auprc") is not None:
            auprcs.append(float(result["auprc"]))
        missed.extend({"combo": combo, **m} for m in result.get("missed_events", []))
    median, worst = _delay_summary(delays_hours)
    adjusted = _point_from_counts(atp, afp, afn)
    return {
        "point": _point_from_counts(tp, fp, fn),
        "event": _event_from_counts(n_events, detected, false_alarms, delays),
        "delay_hours_median": median,
        "delay_hours_max": worst,
        "delays_hours": delays_hours,
        "auprc": float(np.mean(auprcs)) if auprcs else None,
        "point_adjusted": adjusted,
        "point_adjusted_f1": adjusted["f1"],
        "n_scored": n_scored,
        "scored_hours": scored_hours,
        "false_alarms_per_day": _per_day(false_alarms, scored_hours),
        "threshold": None,
        "missed_events": missed,
    }


# --------------------------------------------------------------------------- report


def _fmt(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def markdown_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table: one row per detector × combo, plus each detector's overall row.

    Parameters
    ----------
    metrics
        ``{detector_name: {"per_combo": {combo: evaluate_series(...)}, "overall":
        aggregate(...)}}``; ``"overall"`` is optional.

    Examples
    --------
    >>> r = evaluate_series([0, 5, 0], 1.0, [0, 1, 0])
    >>> table = markdown_table({"seasonal_z": {"per_combo": {"a": r}, "overall": r}})
    >>> table.splitlines()[2].split("|")[1:4]
    [' seasonal_z ', ' a ', ' 1.000 ']
    """
    header = (
        "| detector | combo | event P | event R | event F1 | point P | point R | point F1 "
        "| delay median (h) | delay max (h) | AUPRC | false alarms | PA-F1* |"
    )
    lines = [header, "|" + "---|" * 13]
    for detector, block in metrics.items():
        rows: list[tuple[str, Mapping[str, Any]]] = list(block.get("per_combo", {}).items())
        if block.get("overall") is not None:
            rows.append(("**overall**", block["overall"]))
        for combo, r in rows:
            e, p = r["event"], r["point"]
            cells = [
                detector,
                combo,
                _fmt(e["precision"]),
                _fmt(e["recall"]),
                _fmt(e["f1"]),
                _fmt(p["precision"]),
                _fmt(p["recall"]),
                _fmt(p["f1"]),
                _fmt(r["delay_hours_median"], 1),
                _fmt(r["delay_hours_max"], 1),
                _fmt(r["auprc"]),
                _fmt(int(e["false_alarms"])),
                _fmt(r.get("point_adjusted_f1")),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "*PA-F1 = point-adjusted F1, optimistic (one flag credits a whole event). Event precision "
        "= detected events / (detected events + false-alarm runs). Overall AUPRC is the mean "
        "over combos; other overall figures pool counts."
    )
    missed = _missed_rows(metrics)
    if missed:
        lines += ["", "Missed events (no flag in any of their hours):", ""]
        lines += missed
    return "\n".join(lines) + "\n"


def _missed_rows(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Table rows of every detector's missed events, read from its per-combo results."""
    rows = []
    for detector, block in metrics.items():
        for combo, r in block.get("per_combo", {}).items():
            for m in r.get("missed_events", []):
                cells = [
                    detector,
                    combo,
                    m["event_id"] or f"{m['start']}–{m['end']}",
                    m["start_time"] or str(m["start"]),
                    str(m["steps"]),
                    _fmt(m["peak_score"], 2),
                    _fmt(m["threshold"], 2),
                    _fmt(m["shortfall"], 2),
                ]
                rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return []
    header = "| detector | combo | event | starts | steps | peak score | threshold | short by |"
    return [header, "|" + "---|" * 8, *rows]
