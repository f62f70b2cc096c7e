"""Thresholds, synthetic anomaly injection for calibration, and flags → intervals.

Score direction: **higher score = more anomalous**; a point is flagged when
``score > threshold``. Thresholds are chosen on the validation split (with injected spikes and
dips where real labels are scarce), never on test (DESIGN.md §7).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from app.errors import ContractError, DataError
from app.evaluation import (
    event_metrics,
    events_from_labels,
    flags_from_scores,
    point_metrics,
)

logger = logging.getLogger(__name__)

Objective = Literal["event_f1", "point_f1", "event_recall"]
_OBJECTIVES: tuple[str, ...] = ("event_f1", "point_f1", "event_recall")
Ties = Literal["highest", "middle", "lowest"]
TIES: tuple[str, ...] = ("highest", "middle", "lowest")
_KINDS: tuple[str, ...] = ("spike", "dip")


# --------------------------------------------------------------------------- injection


def inject_anomalies(
    values: ArrayLike,
    rng: np.random.Generator,
    *,
    n_events: int,
    kinds: Sequence[str] = _KINDS,
    spike_magnitude: tuple[float, float] = (0.3, 2.0),
    dip_magnitude: tuple[float, float] = (0.4, 1.0),
    duration_steps: tuple[int, int] = (1, 3),
    min_gap_steps: int = 24,
    protect: ArrayLike | None = None,
    round_counts: bool = True,
    additive_scale: float | None = None,
    quiet: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]:
    """Inject labelled synthetic spikes and dips into a copy of a series.

    For counts (``additive_scale=None``) a spike multiplies the values of 1–3 consecutive
    steps by ``1 + m`` with ``m`` uniform in ``spike_magnitude``; a dip multiplies them by
    ``1 - m`` with ``m`` uniform in ``dip_magnitude`` (``m = 1`` empties the steps); events
    go where every step is present (finite) and positive (a spike on zero would be
    invisible). For values that are not counts (already normalised, negative), pass
    ``additive_scale`` (the series' spread): a spike adds and a dip subtracts
    ``(3 + 5 m) · additive_scale``, anywhere the steps are present. No step of an event is
    ``protect``-ed, and at least ``min_gap_steps`` separate an event from any protected point
    and from every other event. NaN (missing) stays NaN.

    Parameters
    ----------
    values
        1-D series, one value per step, NaN for missing steps.
    rng
        The caller's generator (derive it from ``(seed, combo)``).
    n_events
        How many events to inject; if fewer fit, a warning is logged and fewer are returned.
    kinds
        Kinds to draw from uniformly: ``"spike"`` and/or ``"dip"``.
    spike_magnitude, dip_magnitude
        Ranges of ``m``.
    duration_steps
        Inclusive range of event lengths, in steps.
    min_gap_steps
        Minimal distance (in steps) between an event and any other event or protected point.
    protect
        Boolean mask of points to stay away from (for example real labelled anomalies).
    round_counts
        Round the injected values to whole counts (only where the series is all whole
        numbers, so values below 1 are never rounded away).
    additive_scale
        ``None``: multiplicative events (counts). A positive number: additive events of
        3–8 times it (values that are not counts).
    quiet
        Log "fewer fit" at debug level (callers that inject many copies warn once).

    Returns
    -------
    tuple
        ``(new_values, labels, event_ids)``: the modified copy, a boolean label per hour, and
        an event id per hour (``0, 1, …`` in time order; ``-1`` outside injected events).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> new, labels, ids = inject_anomalies(np.full(200, 100.0), rng, n_events=3)
    >>> int(ids.max()) + 1, bool(((new != 100.0) == labels).all())
    (3, True)
    """
    x = np.asarray(values, dtype=np.float64)
    magnitude = {"spike": spike_magnitude, "dip": dip_magnitude}
    _check_injection(
        x,
        rng,
        n_events=n_events,
        kinds=kinds,
        duration_steps=duration_steps,
        additive_scale=additive_scale,
        magnitude=magnitude,
        min_gap_steps=min_gap_steps,
    )
    n = x.shape[0]
    guard = np.zeros(n, dtype=bool)
    if protect is not None:
        p = np.asarray(protect, dtype=bool)
        if p.shape != (n,):
            raise ContractError(f"protect has shape {p.shape}, expected ({n},)")
        guard = _dilate(p, min_gap_steps)
    usable = np.isfinite(x) & (x > 0) if additive_scale is None else np.isfinite(x)
    new = x.copy()
    labels = np.zeros(n, dtype=bool)
    placed: list[tuple[int, int, str, float]] = []
    for _ in range(n_events):
        event = _draw_event(rng, usable & ~guard, duration_steps, kinds, magnitude)
        if event is None:
            break
        start, end, kind, m = event
        new[start : end + 1] = _shifted(x[start : end + 1], kind, m, additive_scale)
        labels[start : end + 1] = True
        block = np.zeros(n, dtype=bool)
        block[start : end + 1] = True
        guard |= _dilate(block, min_gap_steps)
        placed.append(event)
    if len(placed) < n_events:
        (logger.debug if quiet else logger.warning)(
            "only %d of %d anomalies fit in %d steps (min_gap_steps=%d)",
            len(placed),
            n_events,
            n,
            min_gap_steps,
        )
    finite = x[np.isfinite(x)]
    if round_counts and additive_scale is None and np.array_equal(finite, np.round(finite)):
        new[labels] = np.round(new[labels])
    # Rounding a small spike or dip can leave an hour unchanged; keep the label (it is still
    # the intended event) but say so.
    unchanged = labels & (new == x)
    if unchanged.any():
        logger.debug("%d injected hours unchanged after rounding", int(unchanged.sum()))
    event_ids = np.full(n, -1, dtype=np.int64)
    for i, (start, end, _, _) in enumerate(sorted(placed)):
        event_ids[start : end + 1] = i
    return new, labels, event_ids


def _check_injection(
    x: NDArray[np.float64],
    rng: Any,
    *,
    n_events: int,
    kinds: Sequence[str],
    duration_steps: tuple[int, int],
    additive_scale: float | None,
    magnitude: dict[str, tuple[float, float]],
    min_gap_steps: int,
) -> None:
    """Refuse ``inject_anomalies`` options it cannot work with, naming the bad value."""
    if x.ndim != 1:
        raise ContractError(f"values must be 1-D, got shape {x.shape}")
    if not isinstance(rng, np.random.Generator):
        raise ContractError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    if n_events < 0:
        raise ContractError(f"n_events must be >= 0, got {n_events}")
    unknown = [k for k in kinds if k not in _KINDS]
    if not kinds or unknown:
        raise ContractError(f"kinds must be a non-empty subset of {_KINDS}, got {tuple(kinds)}")
    lo_d, hi_d = int(duration_steps[0]), int(duration_steps[1])
    if not 1 <= lo_d <= hi_d:
        raise ContractError(f"duration_steps must satisfy 1 <= lo <= hi, got {duration_steps}")
    if additive_scale is not None and not additive_scale > 0:
        raise ContractError(f"additive_scale must be > 0, got {additive_scale!r}")
    for kind, (lo, hi) in magnitude.items():
        if not 0 <= lo <= hi or (kind == "dip" and hi > 1):
            raise ContractError(
                f"{kind}_magnitude must be an ordered range of m >= 0, got {(lo, hi)}"
            )
    if min_gap_steps < 0:
        raise ContractError(f"min_gap_steps must be >= 0, got {min_gap_steps}")


def _draw_event(
    rng: np.random.Generator,
    ok: NDArray[np.bool_],
    duration_steps: tuple[int, int],
    kinds: Sequence[str],
    magnitude: dict[str, tuple[float, float]],
) -> tuple[int, int, str, float] | None:
    """One event ``(start, end, kind, m)`` drawn where every step is ``ok`` (None: none
    fits). Draws, in this order: the length, the start, the kind, ``m``."""
    lo_d, hi_d = int(duration_steps[0]), int(duration_steps[1])
    n = ok.shape[0]
    duration = int(rng.integers(lo_d, hi_d + 1))
    # A start s is allowed when the window [s, s + duration) is all ok.
    cum = np.concatenate(([0], np.cumsum(ok, dtype=np.int64)))
    n_starts = n - duration + 1
    if n_starts <= 0:
        return None
    starts = np.flatnonzero(cum[duration:] - cum[:n_starts] == duration)
    if starts.size == 0:
        return None
    start = int(rng.choice(starts))
    kind = str(kinds[int(rng.integers(len(kinds)))])
    lo, hi = magnitude[kind]
    return start, start + duration - 1, kind, float(rng.uniform(lo, hi))


def _shifted(
    part: NDArray[np.float64], kind: str, m: float, additive_scale: float | None
) -> NDArray[np.float64]:
    """The steps of one event: multiplied by ``1 ± m`` (counts), or shifted by
    ``±(3 + 5·min(m, 1))·additive_scale``.

    Examples
    --------
    >>> _shifted(np.array([10.0]), "spike", 0.5, None).tolist()
    [15.0]
    >>> _shifted(np.array([1.0]), "dip", 1.0, 0.5).tolist()
    [-3.0]
    """
    if additive_scale is None:
        return part * (1.0 + m if kind == "spike" else 1.0 - m)
    shift = (3.0 + 5.0 * min(m, 1.0)) * additive_scale
    return part + (shift if kind == "spike" else -shift)


def _dilate(mask: NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """True within ``radius`` steps of any True in ``mask``."""
    if radius == 0 or not mask.any():
        return mask.copy()
    n = mask.shape[0]
    diff = np.zeros(n + 1, dtype=np.int64)
    idx = np.flatnonzero(mask)
    np.add.at(diff, np.maximum(idx - radius, 0), 1)
    np.add.at(diff, np.minimum(idx + radius + 1, n), -1)
    return np.asarray(np.cumsum(diff[:n]) > 0, dtype=bool)


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold chosen on validation data, with how it was chosen.

    Attributes
    ----------
    threshold
        Flag where ``score > threshold`` (same units as the scores it was chosen on).
    objective
        What was maximised (``"event_f1"``, ``"point_f1"`` or ``"event_recall"``).
    value
        The objective at ``threshold`` on the validation data (``None`` if undefined).
    n_candidates
        How many candidate thresholds were tried.
    method
        One-line description of the search and constraints.
    feasible
        False when no candidate met the constraints (the highest candidate was taken).
    operating_point
        With an alarm budget: the budget and what the threshold does on the clean
        validation steps (flagged share, flagged steps and alarm runs per day) and whether
        it fell back to the budget (``fallback``).
    """

    threshold: float
    objective: str
    value: float | None
    n_candidates: int
    method: str
    feasible: bool = True
    operating_point: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _candidates(finite_scores: NDArray[np.float64], max_candidates: int) -> NDArray[np.float64]:
    unique = np.unique(finite_scores)
    if unique.size <= max_candidates:
        return unique
    # Quantiles taken among the observed values, so every candidate is a real score.
    levels = np.linspace(0.0, 1.0, max_candidates)
    return np.unique(np.quantile(unique, levels, method="nearest"))


def _check_options(
    objective: str,
    min_precision: float | None,
    max_false_alarms_per_day: float | None,
    step_hours: float,
    max_candidates: int,
    ties: str,
    false_alarm_weight: float,
) -> None:
    """Refuse options ``choose_threshold`` cannot work with, naming the bad value."""
    if objective not in _OBJECTIVES:
        raise ContractError(f"objective must be one of {_OBJECTIVES}, got {objective!r}")
    if min_precision is not None and not 0.0 <= min_precision <= 1.0:
        raise ContractError(f"min_precision must be in [0, 1], got {min_precision!r}")
    if max_false_alarms_per_day is not None and not max_false_alarms_per_day >= 0:
        raise ContractError(
            f"max_false_alarms_per_day must be >= 0, got {max_false_alarms_per_day!r}"
        )
    if not step_hours > 0:
        raise ContractError(f"step_hours must be > 0, got {step_hours!r}")
    if max_candidates < 2:
        raise ContractError(f"max_candidates must be >= 2, got {max_candidates}")
    if ties not in TIES:
        raise ContractError(f"ties must be one of {TIES}, got {ties!r}")
    if not (np.isfinite(false_alarm_weight) and false_alarm_weight > 0):
        raise ContractError(f"false_alarm_weight must be > 0, got {false_alarm_weight!r}")


def _budget(
    s: NDArray[np.float64],
    y: NDArray[np.bool_],
    usable: NDArray[np.bool_],
    clean: ArrayLike | None,
    max_flag_share: float | None,
) -> tuple[NDArray[np.bool_], float | None]:
    """The clean steps the alarm budget counts, and the budget's threshold (``None``: no
    budget)."""
    if (clean is None) != (max_flag_share is None):
        raise ContractError("clean and max_flag_share go together (the alarm budget)")
    if max_flag_share is None:
        return np.zeros(s.shape[0], dtype=bool), None
    if not 0.0 <= max_flag_share < 1.0:
        raise ContractError(f"max_flag_share must be in [0, 1), got {max_flag_share!r}")
    c = np.asarray(clean).astype(bool)
    if c.shape != s.shape:
        raise ContractError(f"clean has shape {c.shape}, expected {s.shape}")
    clean_mask = c & usable & ~y
    if not clean_mask.any():
        raise DataError("choose_threshold: the alarm budget needs clean validation steps")
    return clean_mask, budget_threshold(s[clean_mask], max_flag_share)


def weighted_event_f1(
    detected: int, n_events: int, false_alarms: int, false_alarm_weight: float = 1.0
) -> float | None:
    """Event F1 with each false alarm counted ``false_alarm_weight`` times:
    ``2·TP / (2·TP + w·FP + FN)`` (``None`` where there is nothing to count).

    With ``w = 1`` it is the plain event F1.  A weight above 1 says the validation data holds
    ``w`` times more events than the stream is expected to meet (injected spikes and dips
    are dense), so each false alarm costs as much as it would at the expected rate.

    Examples
    --------
    >>> weighted_event_f1(3, 4, 2), round(weighted_event_f1(3, 4, 2, 4.0), 4)
    (0.6666666666666666, 0.4)
    """
    den = 2 * detected + false_alarm_weight * false_alarms + (n_events - detected)
    return None if den == 0 else 2 * detected / den


def _rank_candidates(
    s: NDArray[np.float64],
    y: NDArray[np.bool_],
    v: NDArray[np.bool_],
    events: list[tuple[int, int]],
    candidates: NDArray[np.float64],
    *,
    objective: str,
    min_precision: float | None,
    max_false_alarms_per_day: float | None,
    days: float,
    false_alarm_weight: float,
) -> tuple[NDArray[np.float64], list[float | None]]:
    """Each candidate's objective value, and its rank (NaN where it breaks a constraint)."""
    ranks = np.full(candidates.size, np.nan)
    values: list[float | None] = []
    for i, threshold in enumerate(candidates):
        flags = flags_from_scores(s, float(threshold))
        em = event_metrics(flags, events, y, v)
        precision = em["precision"]
        if objective == "point_f1":
            pm = point_metrics(flags, y, v)
            value, precision = pm["f1"], pm["precision"]
        elif objective == "event_f1":
            value = weighted_event_f1(
                em["detected"], em["n_events"], em["false_alarms"], false_alarm_weight
            )
        else:
            value = em["recall"]
        values.append(value)
        if min_precision is not None and (precision is None or precision < min_precision):
            continue
        if (
            max_false_alarms_per_day is not None
            and days > 0
            and em["false_alarms"] / days > max_false_alarms_per_day
        ):
            continue
        ranks[i] = -np.inf if value is None else value
    return ranks, values


def choose_threshold(
    scores: ArrayLike,
    labels: ArrayLike,
    event_ids: ArrayLike | None = None,
    valid: ArrayLike | None = None,
    *,
    objective: Objective = "event_f1",
    min_precision: float | None = None,
    max_false_alarms_per_day: float | None = None,
    step_hours: float = 1.0,
    max_candidates: int = 512,
    ties: Ties = "highest",
    clean: ArrayLike | None = None,
    max_flag_share: float | None = None,
    false_alarm_weight: float = 1.0,
) -> ThresholdChoice:
    """Pick the threshold that maximises ``objective`` on labelled validation data.

    With an **alarm budget** (``max_flag_share`` and the ``clean`` mask of unlabelled,
    uninjected validation steps) only thresholds that flag at most that share of the clean
    steps are candidates: flagging everything can never win however few alarm *runs* it
    makes. Where no such threshold catches any labelled event, the threshold falls back to
    the budget itself (the lowest one within it) and ``operating_point["fallback"]`` says so.

    Candidates are the distinct finite scores at valid positions (thinned to at most
    ``max_candidates`` quantiles of them), so the result is always one of the given scores.
    Where several candidates reach the best value, ``ties`` says which one is taken (see
    :func:`pick_among_ties`). Event metrics follow :func:`app.evaluation.event_metrics`.

    Parameters
    ----------
    scores
        Validation scores, higher = more anomalous; NaN is never flagged.
    labels, event_ids, valid
        As in :func:`app.evaluation.evaluate_series`.
    objective
        ``"event_f1"`` (default), ``"point_f1"`` or ``"event_recall"``.
    min_precision
        Optional constraint on precision (event precision for event objectives, point
        precision for ``"point_f1"``); a candidate that flags nothing does not meet it.
    max_false_alarms_per_day
        Optional constraint on false-alarm runs per day of valid data.
    step_hours
        Hours per step.
    max_candidates
        Cap on the number of candidates (speed).
    ties
        Which of several equally good candidates to take: ``"highest"`` (fewest alarms),
        ``"lowest"`` (most alarms) or ``"middle"`` (the middle of the widest run of them, as
        far from the alarms it must not raise as from the events it must catch).
    clean, max_flag_share
        The alarm budget: boolean mask of clean validation steps, and the largest share of
        them a threshold may flag (for example 0.005). Both or neither.
    false_alarm_weight
        ``"event_f1"`` counts each false-alarm run this many times
        (:func:`weighted_event_f1`): how much denser the labelled (injected) events are
        than the events the detector is expected to meet. 1 = plain event F1.

    Raises
    ------
    DataError
        No finite valid score, or no labelled anomaly to aim at (use
        :func:`threshold_for_false_alarm_rate` or :func:`inject_anomalies` instead).

    Examples
    --------
    >>> scores = [0.1, 0.2, 3.0, 0.1, 0.5, 0.2, 2.5, 0.3]
    >>> labels = [0, 0, 1, 0, 0, 0, 1, 0]
    >>> choice = choose_threshold(scores, labels)
    >>> choice.threshold, choice.value
    (0.5, 1.0)
    """
    _check_options(
        objective,
        min_precision,
        max_false_alarms_per_day,
        step_hours,
        max_candidates,
        ties,
        false_alarm_weight,
    )
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.ndim != 1 or y.shape != s.shape:
        raise ContractError(f"scores {s.shape} and labels {y.shape} must be equal-length 1-D")
    v = np.ones(s.shape[0], dtype=bool) if valid is None else np.asarray(valid).astype(bool)
    if v.shape != s.shape:
        raise ContractError(f"valid has shape {v.shape}, expected {s.shape}")
    usable = v & np.isfinite(s)
    if not usable.any():
        raise DataError("choose_threshold: no finite score at a valid position")
    events = events_from_labels(y, event_ids)
    if not (y & v).any():
        raise DataError(
            "choose_threshold: no labelled anomaly at a valid position; inject synthetic "
            "anomalies or use threshold_for_false_alarm_rate"
        )
    clean_mask, budget = _budget(s, y, usable, clean, max_flag_share)
    candidates = _candidates(s[usable], max_candidates)
    if budget is not None:
        candidates = np.unique(np.append(candidates[candidates >= budget], budget))
    ranks, values = _rank_candidates(
        s,
        y,
        v,
        events,
        candidates,
        objective=objective,
        min_precision=min_precision,
        max_false_alarms_per_day=max_false_alarms_per_day,
        days=float(v.sum()) * step_hours / 24.0,
        false_alarm_weight=false_alarm_weight,
    )
    return _decide(
        s,
        candidates,
        ranks,
        values,
        objective=objective,
        ties=ties,
        method=_describe(
            candidates.size,
            objective,
            false_alarm_weight,
            min_precision,
            max_false_alarms_per_day,
            ties,
        ),
        budget=budget,
        budget_steps=clean_mask,
        max_flag_share=max_flag_share,
        step_hours=step_hours,
        constraints=_constraints(min_precision, max_false_alarms_per_day, max_flag_share),
    )


def _describe(
    n_candidates: int,
    objective: str,
    false_alarm_weight: float,
    min_precision: float | None,
    max_false_alarms_per_day: float | None,
    ties: str,
) -> str:
    """The one-line ``method`` of a threshold choice."""
    weighting = (
        f" (false alarms weighted {false_alarm_weight:g}x)"
        if objective == "event_f1" and false_alarm_weight != 1.0
        else ""
    )
    return (
        f"grid over {n_candidates} validation score values, maximise {objective}{weighting}"
        + (
            f" subject to {' and '.join(_constraints(min_precision, max_false_alarms_per_day))}"
            if min_precision is not None or max_false_alarms_per_day is not None
            else ""
        )
        + f"; ties → {ties} threshold"
    )


def _constraints(
    min_precision: float | None,
    max_false_alarms_per_day: float | None,
    max_flag_share: float | None = None,
) -> list[str]:
    constraints = []
    if min_precision is not None:
        constraints.append(f"precision >= {min_precision:g}")
    if max_false_alarms_per_day is not None:
        constraints.append(f"false alarms/day <= {max_false_alarms_per_day:g}")
    if max_flag_share is not None:
        constraints.append(f"flagged share of clean validation steps <= {max_flag_share:g}")
    return constraints


def _decide(
    s: NDArray[np.float64],
    candidates: NDArray[np.float64],
    ranks: NDArray[np.float64],
    values: list[float | None],
    *,
    objective: str,
    ties: Ties,
    method: str,
    budget: float | None,
    budget_steps: NDArray[np.bool_],
    max_flag_share: float | None,
    step_hours: float,
    constraints: list[str],
) -> ThresholdChoice:
    """The chosen candidate; the budget's threshold where no candidate within it catches an
    event; the highest candidate where none meets the constraints."""
    choice = partial(
        ThresholdChoice, objective=objective, n_candidates=int(candidates.size), method=method
    )
    feasible = ~np.isnan(ranks)
    if budget is not None:
        # Every candidate is within the budget; fall back to it when none catches anything.
        best_value = np.max(ranks[feasible]) if feasible.any() else -np.inf
        if not best_value > 0:
            logger.warning(
                "no threshold within the alarm budget (%g of clean validation steps) "
                "catches a validation event; falling back to the budget threshold %g",
                max_flag_share,
                budget,
            )
            return choice(
                threshold=float(budget),
                value=None if not np.isfinite(best_value) else float(best_value),
                method=method
                + f"; no candidate within {' and '.join(constraints)} catches an event "
                "→ the alarm budget's threshold",
                feasible=False,
                operating_point=operating_point(
                    s, budget_steps, budget, step_hours, max_flag_share, fallback=True
                ),
            )
    if not feasible.any():
        top = float(candidates[-1])
        logger.warning("no threshold meets %s; using the highest score %g", constraints, top)
        return choice(
            threshold=top,
            value=None,
            method=method + "; infeasible → highest validation score",
            feasible=False,
        )
    chosen = pick_among_ties(candidates, feasible & (ranks == np.max(ranks[feasible])), ties)
    value = values[chosen]
    threshold = float(candidates[chosen])
    return choice(
        threshold=threshold,
        value=None if value is None else float(value),
        operating_point=None
        if max_flag_share is None
        else operating_point(s, budget_steps, threshold, step_hours, max_flag_share),
    )


def budget_threshold(clean_scores: ArrayLike, max_flag_share: float) -> float:
    """The lowest threshold that flags at most ``max_flag_share`` of ``clean_scores``.

    With ``max_flag_share = 0`` it is the highest clean score (nothing clean flagged).

    Examples
    --------
    >>> budget_threshold(np.arange(1000.0), 0.005)  # 995..999 lie above
    994.0
    >>> budget_threshold([1.0, 2.0, 3.0], 0.0)
    3.0
    """
    if max_flag_share > 0:
        return threshold_for_false_alarm_rate(clean_scores, max_flag_share)
    s = np.asarray(clean_scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise DataError("budget_threshold: no finite clean score")
    return float(s.max())


def operating_point(
    scores: ArrayLike,
    clean: ArrayLike,
    threshold: float,
    step_hours: float,
    max_flag_share: float | None,
    *,
    fallback: bool = False,
) -> dict[str, Any]:
    """What ``threshold`` does on the ``clean`` validation steps: the expected false
    alarms (flagged share, flagged steps and alarm runs per day of clean steps).

    Examples
    --------
    >>> op = operating_point([0, 5, 5, 0, 5, 0], [1, 1, 1, 1, 1, 1], 1.0, 4.0, 0.5)
    >>> op["flag_share"], op["alarm_runs_per_day"]
    (0.5, 2.0)
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(clean).astype(bool) & np.isfinite(s)
    flags = flags_from_scores(s, float(threshold)) & c
    n_clean = int(c.sum())
    days = n_clean * step_hours / 24.0
    runs = len(events_from_labels(flags))
    flagged = int(flags.sum())
    return {
        "max_flag_share": None if max_flag_share is None else float(max_flag_share),
        "threshold": float(threshold),
        "clean_steps": n_clean,
        "flag_share": float(flagged / n_clean) if n_clean else None,
        "flagged_steps_per_day": float(flagged / days) if days else None,
        "alarm_runs_per_day": float(runs / days) if days else None,
        "fallback": bool(fallback),
    }


def pick_among_ties(candidates: ArrayLike, best: ArrayLike, ties: Ties = "highest") -> int:
    """Index of the candidate to take among the equally good ones.

    ``candidates`` are ascending thresholds and ``best`` marks those that reach the best
    value. ``"highest"`` and ``"lowest"`` take the end ones. ``"middle"`` looks at runs of
    consecutive best candidates, takes the run that spans the widest score range (the
    higher one on a tie), and in it the candidate nearest the run's midpoint (the higher
    one on a tie): a threshold with as much room below it as above, so that neither an
    event a little weaker than the validation ones nor a clean hour a little stranger
    flips the decision.

    Examples
    --------
    >>> c = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0]
    >>> best = [False, True, True, True, True, False, True]
    >>> [pick_among_ties(c, best, t) for t in ("highest", "middle", "lowest")]
    [6, 3, 1]
    >>> pick_among_ties(c, [True, True, True, False, False, False, False], "middle")
    1
    """
    c = np.asarray(candidates, dtype=np.float64)
    b = np.asarray(best, dtype=bool)
    if c.ndim != 1 or b.shape != c.shape or not b.any():
        raise ContractError("pick_among_ties: needs 1-D candidates and at least one best one")
    idx = np.flatnonzero(b)
    if ties == "highest":
        return int(idx[-1])
    if ties == "lowest":
        return int(idx[0])
    if ties != "middle":
        raise ContractError(f"ties must be one of {TIES}, got {ties!r}")
    runs = events_from_labels(b)  # (start, end) index pairs of consecutive best candidates
    start, end = max(runs, key=lambda r: (c[r[1]] - c[r[0]], r[1]))
    run = np.arange(start, end + 1)
    distance = np.abs(c[run] - (c[start] + c[end]) / 2.0)
    return int(run[np.flatnonzero(distance == distance.min())[-1]])


#: The alarm budget: no threshold may flag more than this share of the clean validation
#: steps (0.5 %: about 7 steps a day at 1-minute steps, one every 8 days at hourly ones) ...
DEFAULT_ALARM_BUDGET = 0.005
#: ... nor more flagged clean steps per day than this (None: no daily cap).
DEFAULT_MAX_FLAGS_PER_DAY: float | None = None


def flag_share_budget(
    share: float | None, step_seconds: int, per_day: float | None = DEFAULT_MAX_FLAGS_PER_DAY
) -> float | None:
    """The share of clean validation steps an alarm budget lets a threshold flag: at most
    ``share`` of them and at most ``per_day`` flagged steps per day (``None``: no cap).

    Examples
    --------
    >>> flag_share_budget(0.005, 3600, 1.0)  # hourly: 0.12 a day, under the cap
    0.005
    >>> round(flag_share_budget(0.005, 60, 1.0), 6)  # 1-minute: 7.2 a day, capped at 1
    0.000694
    """
    if share is None or per_day is None:
        return share
    if per_day < 0:
        raise ContractError(f"flags per day must be >= 0, got {per_day!r}")
    return min(share, per_day * step_seconds / 86_400)


def threshold_for_false_alarm_rate(clean_scores: ArrayLike, rate: float) -> float:
    """Threshold that flags at most a fraction ``rate`` of clean (anomaly-free) points.

    The smallest observed clean score ``t`` with ``mean(clean > t) <= rate`` (NaN ignored),
    i.e. the empirical ``1 - rate`` quantile taken among the observed values.

    Examples
    --------
    >>> threshold_for_false_alarm_rate(np.arange(100.0), 0.05)  # 95..99 lie above
    94.0
    """
    if not 0.0 < rate < 1.0:
        raise ContractError(f"rate must be in (0, 1), got {rate!r}")
    s = np.asarray(clean_scores, dtype=np.float64).ravel()
    s = np.sort(s[np.isfinite(s)])
    if s.size == 0:
        raise DataError("threshold_for_false_alarm_rate: no finite clean score")
    # Number of points allowed above the threshold, then the score just below them.
    allowed = int(np.floor(rate * s.size + 1e-9))
    return float(s[s.size - 1 - allowed])


def flags_to_intervals(
    flags: ArrayLike, timestamps: Sequence[Any] | pd.DatetimeIndex
) -> list[tuple[Any, Any]]:
    """Contiguous runs of flags as ``(start, end)`` pairs of timestamps, both inclusive.

    Examples
    --------
    >>> ts = pd.date_range("2025-01-01", periods=5, freq="h")
    >>> for start, end in flags_to_intervals([0, 1, 1, 0, 1], ts):
    ...     print(start, "->", end)
    2025-01-01 01:00:00 -> 2025-01-01 02:00:00
    2025-01-01 04:00:00 -> 2025-01-01 04:00:00
    """
    f = np.asarray(flags)
    n = len(timestamps)
    if f.ndim != 1 or f.shape[0] != n:
        raise ContractError(f"flags has shape {f.shape}, timestamps has length {n}")
    return [(timestamps[s], timestamps[e]) for s, e in events_from_labels(f)]
