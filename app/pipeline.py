"""Training, calibration and evaluation of per-combo detectors: the steps behind the CLIs
(``app.train``, ``app.evaluate``) and the notebook API (``app.api``).

Honesty rules enforced here:

- normalisation statistics and weights come from the **train** split only;
- early stopping sees the **validation** split with its labelled hours masked;
- calibrators and thresholds are fitted on the **validation** split only (its labelled
  events plus injected spikes and dips) — the test split is touched only by ``evaluate``;
- every window is scored with the same per-(combo, hour) seed the stream uses, so the
  validation scores are the scores the stream would produce.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from app import catalog
from app.baselines import SeasonalBaseline
from app.data import sliding_windows
from app.errors import DataError
from app.evaluation import evaluate_series
from app.postprocess.calibrate import EmpiricalCalibrator
from app.postprocess.decision import RULE, Decision
from app.postprocess.threshold import (
    DEFAULT_ALARM_BUDGET,
    DEFAULT_MAX_FLAGS_PER_DAY,
    Objective,
    Ties,
    choose_threshold,
    flag_share_budget,
    inject_anomalies,
)
from app.timebase import TimeBase, window_seed

log = logging.getLogger(__name__)


def detector_class(name: str) -> Any:
    """The detector class registered as ``name`` in ``app.catalog``."""
    return catalog.spec(name).detector_class()


def params_class(name: str) -> Any:
    """The params class of the detector registered as ``name``."""
    return catalog.spec(name).params_class()


def derive_seed(seed: int, combo: str, purpose: str) -> int:
    """A 31-bit seed for one (seed, combo, purpose), independent of training order.

    Examples
    --------
    >>> derive_seed(42, "Accel_CMP", "fit") == derive_seed(42, "Accel_CMP", "fit")
    True
    """
    digest = hashlib.blake2b(f"{seed}|{combo}|{purpose}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class ComboSeries:
    """One combo on its regular grid (all splits), as arrays."""

    combo: str
    timestamps: pd.DatetimeIndex
    values: NDArray[np.float64]  # NaN = missing
    labels: NDArray[np.bool_]
    event_ids: NDArray[np.str_]
    split: NDArray[np.str_]
    step_seconds: int
    value_kind: str = "counts"  # "counts" or "real" (app.data.VALUE_KINDS)

    @property
    def timebase(self) -> TimeBase:
        return TimeBase(self.step_seconds)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, combo: str) -> ComboSeries:
        part = frame[frame["combo"] == combo].sort_values("timestamp")
        if part.empty:
            raise DataError(
                f"combo {combo!r} is not in the data (combos: {sorted(frame['combo'].unique())})"
            )
        ts = pd.DatetimeIndex(part["timestamp"])
        step = frame.attrs.get("step_seconds")
        if step is None:
            step = int((ts[1] - ts[0]).total_seconds()) if len(ts) > 1 else 3600
        return cls(
            combo=combo,
            timestamps=ts,
            values=part["value"].to_numpy(dtype=np.float64),
            labels=part["is_anomaly"].to_numpy(dtype=bool),
            event_ids=part["event_id"].astype(str).to_numpy(),
            split=part["split"].astype(str).to_numpy(),
            step_seconds=int(step),
            value_kind=str(frame.attrs.get("values", "counts")),
        )

    def positions(self, split: str) -> NDArray[np.intp]:
        return np.flatnonzero(self.split == split)

    def steps(self) -> NDArray[np.int64]:
        return (self.timestamps.asi8 // 10**9 // self.step_seconds).astype(np.int64)

    def span(self, split: str) -> dict[str, str]:
        pos = self.positions(split)
        if len(pos) == 0:
            return {"start": "", "end": ""}
        return {
            "start": self.timestamps[pos[0]].isoformat(),
            "end": self.timestamps[pos[-1]].isoformat(),
        }


def scorable(
    values: NDArray[np.float64], positions: NDArray[np.intp], window: int
) -> NDArray[np.intp]:
    """Positions with a full window behind them and their own value present."""
    pos = positions[positions >= window - 1]
    return pos[np.isfinite(values[pos])]


def windows_at(
    series: ComboSeries, values: NDArray[np.float64], positions: NDArray[np.intp], window: int
) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.int64]]:
    """The scorable ``positions``, their windows of ``values`` and their stream seeds."""
    pos = scorable(values, positions, window)
    windows = np.ascontiguousarray(sliding_windows(values, window)[pos - (window - 1)])
    steps = series.steps()[pos]
    seeds = np.array([window_seed(series.combo, int(s)) for s in steps], dtype=np.int64)
    return pos, windows, seeds


def score_positions(
    detector: Any, series: ComboSeries, values: NDArray[np.float64], positions: NDArray[np.intp]
) -> tuple[NDArray[np.float64], Any]:
    """Detector scores of the windows ending at ``positions`` (NaN where not scorable)."""
    out = np.full(len(values), np.nan)
    pos, windows, seeds = windows_at(series, values, positions, detector.window)
    if len(pos) == 0:
        return out, None
    details = detector.score_details(windows, seeds)
    out[pos] = details.score
    return out, details


ScoreFn = Any  # (values, positions) -> raw scores over the whole series (NaN elsewhere)


def detector_score_fn(detector: Any, series: ComboSeries) -> ScoreFn:
    """``(values, positions) -> raw scores`` of ``detector`` on ``series`` (for calibration)."""

    def score_fn(values: NDArray[np.float64], positions: NDArray[np.intp]) -> Any:
        return score_positions(detector, series, values, positions)[0]

    return score_fn


def baseline_positions(
    series: ComboSeries, values: NDArray[np.float64], positions: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Seasonal robust-z scores (causal) at ``positions``, NaN elsewhere."""
    counts = series.value_kind == "counts"
    scale = 1.0 if counts else noise_scale(values[series.positions("train")])
    baseline = SeasonalBaseline(
        step_seconds=series.step_seconds, poisson_floor=counts, eps=1.0 if counts else 0.01 * scale
    )
    scores = baseline.score(values, series.timestamps)
    out = np.full(len(values), np.nan)
    out[positions] = scores[positions]
    return out


def min_train_points(detector: Any) -> int:
    """Observed training steps a detector needs: three windows of its network, plus the
    history its windows hold beyond that (FCVAE's ``reference_weeks``)."""
    return int(detector.window + 2 * detector.params.window)


def reference_hint(detector: Any) -> str:
    """For a too-short-series error: what the reference history adds ('' when none)."""
    extra = int(detector.window - detector.params.window)
    if not extra:
        return ""
    return (
        f"its windows also hold {extra} steps of same-hour-of-week reference; "
        "--reference-weeks 0 (or fewer weeks) needs less"
    )


def train_detector(
    name: str,
    series: ComboSeries,
    *,
    params: Any = None,
    seed: int = 42,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[Any, Any]:
    """Fit one detector on the train split; early-stop on validation with labels masked."""
    train = series.values[series.positions("train")]
    val = series.values[series.positions("val")].copy()
    val[series.labels[series.positions("val")]] = np.nan
    cls = detector_class(name)
    detector = cls(params, device=device) if params is not None else cls(device=device)
    w = int(detector.params.window)
    if np.isfinite(val).sum() < 2 * w and not getattr(detector.params, "reference_weeks", 0):
        # A short validation split (a short history): its windows reach back into the
        # last training steps, so its first steps validate too.
        val = np.concatenate([train[-(w - 1) :], val])
    n_train = int(np.isfinite(train).sum())
    need = min_train_points(detector)
    if n_train < need:
        hint = reference_hint(detector)
        tb = series.timebase
        raise DataError(
            f"series {series.combo!r} has {tb.describe(n_train)} of observed training data; "
            f"at least {tb.describe(need)} are needed (3 windows of "
            f"{tb.describe(detector.params.window)})" + (f"; {hint}" if hint else "")
        )
    report = detector.fit(
        train,
        val=val if np.isfinite(val).sum() else None,
        seed=derive_seed(seed, series.combo, name),
        progress=progress,
    )
    return detector, report


@dataclass(frozen=True)
class ValidationSet:
    """Validation hours as they are, then ``copies`` times with injected spikes/dips; the
    copies are laid end to end with NaN gaps so events and alarm runs never join."""

    raw: NDArray[np.float64]  # raw scores of all copies (NaN in the gaps / unscorable)
    labels: NDArray[np.bool_]
    event_ids: NDArray[np.str_]
    clean: NDArray[np.bool_]  # real copy, no label: what calibrators are fitted on
    n_real: int
    n_injected_events: int
    copies: int = 1


GAP = 24
DEFAULT_TIES: Ties = "highest"  # which of equally good validation thresholds to take
# Injected copies of the validation split that thresholds are chosen on. Inside the
# validation split, 1 to 8 copies tie on cross-validated event F1 (0.905-0.908), and the more
# copies, the less the threshold depends on which injections were drawn
# (experiments/threshold_ties.py --spread; TECHNICAL.md "Choosing thresholds").
DEFAULT_INJECT_COPIES = 8
#: Synthetic spikes and dips injected into each validation copy.
DEFAULT_N_INJECT = 12
#: How many anomalies a week the threshold objective assumes the stream meets: 12 per 4
#: weeks, the density of the injected events on the demo's 4-week validation split. Where a
#: validation split spans days rather than weeks (1- and 5-minute series), its 12 injected
#: events are far denser than that, and an objective that counts them against false alarms
#: one for one would buy recall with false alarms the stream then meets every day: there
#: each false alarm weighs as many times more as the injections are denser
#: (``false_alarm_weight``; TECHNICAL.md "Real data").
DEFAULT_EVENTS_PER_WEEK = 3.0


def false_alarm_weight(
    injected_per_copy: float, n_steps: int, timebase: TimeBase, events_per_week: float | None
) -> float:
    """How many times a validation false alarm counts against an injected event: the
    injected events' density over the ``events_per_week`` the stream is expected to meet
    (never below 1; ``None`` or 0: 1).

    The expected count over ``n_steps`` is rounded to a whole number (at least 1), so a
    validation split of about 4 weeks with 12 injected events keeps the plain F1.

    Examples
    --------
    >>> hourly, five_min = TimeBase(3600), TimeBase(300)
    >>> false_alarm_weight(12, 666, hourly, 3.0)  # the demo: 27.75 days, 12 events expected
    1.0
    >>> false_alarm_weight(12, 2196, five_min, 3.0)  # 7.6 days of 5-minute steps: 3 expected
    4.0
    """
    if not events_per_week or injected_per_copy <= 0:
        return 1.0
    expected = max(1, round(events_per_week * n_steps / timebase.week))
    return max(1.0, injected_per_copy / expected)


def noise_scale(values: NDArray[np.float64]) -> float:
    """A robust step-to-step spread of a series (1.4826 · MAD of its first differences
    / √2), the unit of injected events for values that are not counts.

    Examples
    --------
    >>> round(noise_scale(np.array([0.0, 1.0, 0.0, 1.0, 0.0])), 3)  # steps of ±1
    1.048
    """
    x = values[np.isfinite(values)]
    d = np.diff(x)
    if d.size == 0:
        return 1.0
    mad = float(np.median(np.abs(d - np.median(d))))
    scale = float(1.4826 * mad / np.sqrt(2.0))
    if scale > 0:
        return scale
    spread = float(np.std(x))
    return spread if spread > 0 else 1.0


def injection_gap(n: int, n_inject: int, day: int, longest: int = 3) -> int:
    """Steps kept between injected events: a day of steps where ``n_inject`` events fit
    that far apart in ``n`` steps, else a quarter of the even spacing (random placement
    needs room to spare).

    Examples
    --------
    >>> injection_gap(672, 12, 24), injection_gap(3600, 12, 1440)
    (24, 75)
    """
    if n >= 2 * n_inject * day:
        return day
    return max(longest, n // (4 * max(n_inject, 1)))


def injected_copy(
    score_fn: ScoreFn,
    series: ComboSeries,
    positions: NDArray[np.intp],
    seed: int,
    n_inject: int,
    *,
    quiet: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]:
    """Raw scores at ``positions`` once ``n_inject`` spikes/dips are injected there.

    The events are drawn by ``seed`` and kept away from labelled and missing hours.

    Returns
    -------
    tuple
        ``(raw, injected_labels, injected_event_ids)`` over ``positions`` (ids ``-1``
        outside the injected events).
    """
    protect = series.labels[positions] | ~np.isfinite(series.values[positions])
    part = series.values[positions]
    injected_val, inj_labels, inj_ids = inject_anomalies(
        part,
        np.random.default_rng(seed),
        n_events=n_inject,
        protect=protect,
        min_gap_steps=injection_gap(len(part), n_inject, series.timebase.day),
        additive_scale=noise_scale(part) if series.value_kind == "real" else None,
        quiet=quiet,
    )
    injected = series.values.copy()
    injected[positions] = injected_val
    return score_fn(injected, positions)[positions], inj_labels.astype(bool), inj_ids


def validation_set(
    score_fn: ScoreFn,
    series: ComboSeries,
    *,
    seed: int = 42,
    n_inject: int = DEFAULT_N_INJECT,
    copies: int = DEFAULT_INJECT_COPIES,
    quiet: bool = False,
) -> ValidationSet:
    """Score the validation split, and ``copies`` copies of it with ``n_inject`` injected
    spikes/dips each (each copy its own hours and sizes).

    The injections depend only on (seed, combo, copy) and the data, so every detector of a
    combo is calibrated on the same injected hours. "Fewer fit" is warned once, for the first
    copy (``quiet``: not at all, at debug level).
    """
    if copies < 1:
        raise DataError(f"copies must be >= 1, got {copies}")
    pos = series.positions("val")
    if len(pos) == 0:
        raise DataError(f"combo {series.combo!r} has no validation split to calibrate on")
    real = score_fn(series.values, pos)[pos]
    labels_real = series.labels[pos]
    n = len(pos)
    # Event ids must be unique per copy: an id shared by two copies would make one
    # "event" span the gap between them and swallow every alarm in between.
    parts = [(real, labels_real, np.where(labels_real, "real:" + series.event_ids[pos], ""))]
    n_injected = 0
    for k in range(copies):
        # Copy 0 keeps the seed it had before there were several copies.
        purpose = "inject" if k == 0 else f"inject{k}"
        inj, inj_labels, inj_ids = injected_copy(
            score_fn,
            series,
            pos,
            derive_seed(seed, series.combo, purpose),
            n_inject,
            quiet=quiet or k > 0,
        )
        tag = "" if k == 0 else str(k)
        copy_ids = np.where(labels_real, f"copy{tag}:" + series.event_ids[pos], "")
        ids = np.where(inj_ids >= 0, f"inj{tag}:" + inj_ids.astype(str), copy_ids)
        parts.append((inj, labels_real | inj_labels, ids))
        n_injected += int(inj_ids.max() + 1) if (inj_ids >= 0).any() else 0
    raw, labels, event_ids = stack_copies(parts)
    return ValidationSet(
        raw=raw,
        labels=labels,
        event_ids=event_ids,
        clean=np.concatenate(
            [~labels_real & np.isfinite(real), np.zeros(copies * (GAP + n), bool)]
        ),
        n_real=n,
        n_injected_events=n_injected,
        copies=copies,
    )


Copy = tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.str_]]  # raw, labels, ids


def stack_copies(parts: list[Copy]) -> Copy:
    """Copies of the same hours (raw scores, labels, event ids) laid end to end, ``GAP``
    NaN hours between them so events and alarm runs never join across copies.

    Event ids must already differ between copies.

    Examples
    --------
    >>> part = (np.ones(2), np.array([True, False]), np.array(["a", ""]))
    >>> raw, labels, ids = stack_copies([part, part])
    >>> len(raw) == 4 + GAP, int(np.isnan(raw).sum()) == GAP
    (True, True)
    """
    gap: Copy = (np.full(GAP, np.nan), np.zeros(GAP, bool), np.full(GAP, ""))
    laid: list[Copy] = []
    for i, part in enumerate(parts):
        laid += [gap, part] if i else [part]
    return (
        np.concatenate([p[0] for p in laid]),
        np.concatenate([p[1] for p in laid]),
        np.concatenate([p[2] for p in laid]),
    )


@dataclass(frozen=True)
class ThresholdRule:
    """How thresholds are chosen on the validation split: the one set of knobs every
    calibration shares (each detector's and the ensemble's; ``app.train``'s options).

    Attributes
    ----------
    seed
        Seeds the injected events (with the combo and the copy).
    n_inject, copies
        Spikes/dips injected into each of ``copies`` copies of the validation split.
    objective, min_precision, ties
        What the threshold maximises, an optional precision floor, and which of tied
        thresholds is taken (:func:`app.postprocess.threshold.choose_threshold`).
    max_flag_share, max_flags_per_day
        The alarm budget on clean validation steps (``None``: none; per day: no cap).
    events_per_week
        The anomaly rate the stream is expected to meet: false alarms weigh as much more as
        the injected events are denser (:func:`false_alarm_weight`; ``None``: unweighted).
    """

    seed: int = 42
    n_inject: int = DEFAULT_N_INJECT
    copies: int = DEFAULT_INJECT_COPIES
    objective: Objective = "event_f1"
    min_precision: float | None = None
    ties: Ties = DEFAULT_TIES
    max_flag_share: float | None = DEFAULT_ALARM_BUDGET
    max_flags_per_day: float | None = DEFAULT_MAX_FLAGS_PER_DAY
    events_per_week: float | None = DEFAULT_EVENTS_PER_WEEK

    def validation_set(
        self, score_fn: ScoreFn, series: ComboSeries, *, quiet: bool = False
    ) -> ValidationSet:
        """The validation split and its injected copies, scored by ``score_fn`` (``quiet``:
        "fewer fit" at debug level, for a set already made once for this series)."""
        return validation_set(
            score_fn,
            series,
            seed=self.seed,
            n_inject=self.n_inject,
            copies=self.copies,
            quiet=quiet,
        )

    def budget(self, series: ComboSeries) -> float | None:
        """The share of clean validation steps a threshold may flag on ``series``."""
        return flag_share_budget(self.max_flag_share, series.step_seconds, self.max_flags_per_day)

    def false_alarm_weight(self, vset: ValidationSet, series: ComboSeries) -> float:
        """How many times a false alarm counts on ``vset``: its injected events per copy
        against ``events_per_week`` over its span (:func:`false_alarm_weight`)."""
        per_copy = vset.n_injected_events / max(vset.copies, 1)
        return false_alarm_weight(per_copy, vset.n_real, series.timebase, self.events_per_week)

    def choose(self, scores: NDArray[np.float64], vset: ValidationSet, series: ComboSeries) -> Any:
        """The best threshold on ``scores`` (aligned with ``vset``) within the budget."""
        budget = self.budget(series)
        return choose_threshold(
            scores,
            vset.labels,
            vset.event_ids,
            np.isfinite(scores),
            objective=self.objective,
            step_hours=series.step_seconds / 3600,
            min_precision=self.min_precision,
            ties=self.ties,
            clean=None if budget is None else vset.clean,
            max_flag_share=budget,
            false_alarm_weight=self.false_alarm_weight(vset, series),
        )

    def record(self, vset: ValidationSet, series: ComboSeries) -> dict[str, Any]:
        """What a decision records of the rule: the budget, and the false-alarm weighting
        where it is not 1 (decisions with the plain event F1 read as before it existed)."""
        out: dict[str, Any] = {
            "alarm_budget": self.budget(series),
            "alarm_budget_per_day": self.max_flags_per_day,
        }
        weight = self.false_alarm_weight(vset, series)
        if weight != 1.0:
            out.update(expected_events_per_week=self.events_per_week, false_alarm_weight=weight)
        return out


def _rule(rule: ThresholdRule | None, changes: dict[str, Any]) -> ThresholdRule:
    """``rule`` (default: ``ThresholdRule()``) with keyword ``changes``."""
    return replace(rule or ThresholdRule(), **changes)


def calibrate_scores(
    score_fn: ScoreFn, series: ComboSeries, rule: ThresholdRule | None = None, **changes: Any
) -> tuple[Decision, dict[str, Any]]:
    """Fit a calibrator and choose a threshold on the validation split only.

    The calibrator is fitted on clean validation hours (no label, no injection); the
    threshold maximises the rule's objective over the real and the injected copies (see
    ``validation_set``), each false alarm weighted by how much denser the injected events
    are than ``rule.events_per_week`` (``false_alarm_weight``).  Keyword ``changes`` change
    single fields of ``rule`` (``calibrate_scores(fn, series, copies=2)``).

    Returns
    -------
    (decision, validation_metrics)
        The ``Decision``: the calibrator, the threshold (calibrated and raw) and how it
        was chosen; ``decision.to_dict()`` goes into the artifact's ``meta.json``.
    """
    rule = _rule(rule, changes)
    vset = rule.validation_set(score_fn, series)
    calibrator = EmpiricalCalibrator().fit(vset.raw[vset.clean])
    calibrated = calibrator.transform(vset.raw)
    choice = rule.choose(calibrated, vset, series)
    real_raw = vset.raw[: vset.n_real]
    finite = real_raw[np.isfinite(real_raw)]
    above = finite[calibrator.transform(finite) > choice.threshold]
    record = {
        "threshold_raw": float(above.min()) if len(above) else None,
        "choice": choice.to_dict(),
        "rule": RULE,
        "n_injected_events": vset.n_injected_events,
        "n_injected_copies": rule.copies,
        "ties": rule.ties,
        "calibration_split": "val",
        **rule.record(vset, series),
        "operating_point": choice.operating_point,
    }
    decision = Decision(threshold=float(choice.threshold), calibrator=calibrator, record=record)
    cal_real = calibrated[: vset.n_real]
    metrics = evaluate_series(
        cal_real,
        choice.threshold,
        vset.labels[: vset.n_real],
        event_ids=vset.event_ids[: vset.n_real],
        valid=np.isfinite(cal_real),
        step_hours=series.step_seconds / 3600,
    )
    return decision, metrics


def fit_ensemble(
    series: ComboSeries,
    detectors: Mapping[str, Any],
    rule: ThresholdRule | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """Choose how to merge the calibrated scores of one combo's detectors, on validation only.

    ``detectors`` maps each detector's name to its trained detector (its meta holds its
    ``decision``); the primary detector (``catalog.PRIMARY``) must be among them.  Every
    candidate of ``combine.candidate_settings`` (weights of the weighted mean, and max)
    gets its own best threshold on the validation set (real + injected hours) under
    ``rule`` (with keyword ``changes``); the candidate with the best objective wins, ties
    going to the larger primary weight (the simpler model).  Weight 1 is the primary alone,
    so on validation the ensemble is never worse than it.
    """
    from app.postprocess.combine import WEIGHT_KEY, candidate_settings, combine_calibrated

    rule = _rule(rule, changes)
    calibrated = {}
    # The injections depend only on (seed, combo) and the data, so both detectors' validation
    # sets hold the same hours, labels and event ids: the last ``vset`` serves for all.
    for name, detector in detectors.items():
        # Each detector's calibration made (and warned about) these injections already.
        vset = rule.validation_set(detector_score_fn(detector, series), series, quiet=True)
        calibrated[name] = Decision.from_dict(detector.meta["decision"]).calibrate(vset.raw)
    tried = []
    for candidate in candidate_settings():
        choice = rule.choose(combine_calibrated(calibrated, candidate), vset, series)
        tried.append(
            {
                **candidate,
                "threshold": float(choice.threshold),
                "objective_value": choice.value,
                "operating_point": choice.operating_point,
            }
        )

    def rank(entry: dict[str, Any]) -> tuple[float, float]:
        value = entry["objective_value"] if entry["objective_value"] is not None else -1.0
        return (value, entry.get(WEIGHT_KEY, -1.0))

    best: dict[str, Any] = max(tried, key=rank)
    return {
        **best,
        **rule.record(vset, series),
        "objective": rule.objective,
        "chosen_on": "val (real + injected)",
        "candidates": tried,
    }


#: The longest window (network window plus reference history) that defaults pick: each
#: window is held in the stream's state and scored as one row, so a weekly reference of
#: 5-minute steps (2,016 a week) is left to ``--reference-weeks`` rather than chosen.
MAX_DEFAULT_WINDOW_STEPS = 4096
#: The network window defaults to one week of steps, at most this many and at least
#: ``MIN_WINDOW_STEPS`` (168 = one week of hours; a 5-minute window of 168 steps is 14 h).
MAX_NETWORK_WINDOW_STEPS = 168
MIN_WINDOW_STEPS = 16
#: Reference weeks tried, most first; two weeks measured much worse than none (TECHNICAL).
REFERENCE_WEEKS_CHOICES = (4, 3)
#: Where no weekly reference fits: reference days tried, most first (the same time of day
#: over the previous days, for series with days but not weeks of history).
REFERENCE_DAYS_CHOICES = (7, 5, 3)
#: A model's default epochs are counted for a series of up to this many training windows
#: (18 weeks of hours; the demo's combos have about 2,350): a longer series — a month of
#: 5-minute steps has 8,640 — gets proportionally fewer epochs, each seeing more windows,
#: so the optimiser takes about as many steps and training time stays bounded. Its KL
#: warm-up and early-stopping patience shrink with it.
EPOCH_REFERENCE_WINDOWS = 3000
MIN_EPOCHS = 8
MIN_PATIENCE = 3


def _fitting_count(
    choices: tuple[int, ...], lag: int, window: int, n_train: int, most: int | None = None
) -> int:
    """The most reference periods of ``lag`` steps (from ``choices``, at most ``most``)
    whose windows stay within ``MAX_DEFAULT_WINDOW_STEPS`` and leave three network windows
    plus one more period of training data; 0 when none fits."""
    for k in choices:
        total = k * lag + window
        fits = total <= MAX_DEFAULT_WINDOW_STEPS and n_train >= total + 2 * window + lag
        if fits and (most is None or k <= most):
            return k
    return 0


@dataclass(frozen=True)
class Choice:
    """One setting ``app.train`` chose for a series, and why (logged, in ``meta.json``)."""

    name: str
    value: Any
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "why": self.why}


def fit_to_history(
    base: Any,
    *,
    timebase: TimeBase,
    n_train: int | None,
    value_kind: str = "counts",
    explicit: frozenset[str] = frozenset(),
    preset: bool = False,
    daily_reference: bool = False,
) -> tuple[dict[str, Any], list[Choice]]:
    """Parameter updates that make ``base`` (a detector's params) fit one series.

    Periods are set in time and converted to the series' steps; the network window and
    the reference weeks shrink to what ``n_train`` observed training steps can hold
    (three network windows of training data beyond the reference history, and one more
    week for a reference); ``n_train=None`` (history unknown) keeps the model's
    reference. Names in ``explicit`` were set by the user and are kept; a ``preset``
    (``--tiny``) keeps its window unless it does not fit. ``daily_reference`` (off by
    default: on real 5-minute KPIs it did not win on validation, TECHNICAL) falls back to a
    same-time-of-day reference of ``REFERENCE_DAYS_CHOICES`` days where no weekly one fits.

    Examples
    --------
    >>> from app.detectors.fcvae import FCVAEParams
    >>> upd, why = fit_to_history(FCVAEParams(), timebase=TimeBase(300), n_train=900)
    >>> upd["window"], upd["reference_weeks"], upd["clean_period"]
    (168, 0, 288)
    """
    fields = type(base).model_fields
    update: dict[str, Any] = {}
    choices: list[Choice] = []
    tb = timebase

    def choose(field: str, value: Any, why: str) -> None:
        if field in fields and field not in explicit:
            update[field] = value
            choices.append(Choice(field, value, why))

    if "clean_period" in fields:
        choose("clean_period", tb.day, f"one day of {tb.step_seconds}-s steps")
    if value_kind == "real":
        choose("log_transform", False, "--values real: values are not counts")
    window = int(base.window)
    if "window" not in explicit:
        window, why = _fit_window(type(base), window, tb, n_train, preset)
        choose("window", window, why)
    if (
        "reference_weeks" in fields
        and "reference_weeks" not in explicit
        and base.reference_weeks
        and n_train is not None
    ):
        try_days = (
            daily_reference and "reference_period" in fields and "reference_period" not in explicit
        )
        for field, value, why in _fit_reference(
            base, tb, window, n_train, try_days=try_days, daily=daily_reference
        ):
            choose(field, value, why)
    if not preset and n_train is not None and "epochs" not in explicit:
        _fit_epochs(base, n_train, choose)
    return update, choices


def _fit_window(
    params_type: type, window: int, tb: TimeBase, n_train: int | None, preset: bool
) -> tuple[int, str]:
    """The network window for a series, and why: one week of steps (at most
    ``MAX_NETWORK_WINDOW_STEPS``) for params whose ``WINDOW_IS_A_WEEK`` (FCVAE's) unless a
    preset sets it; any window shrinks so that three fit in the training data, never below
    the params' ``MIN_WINDOW_STEPS``."""
    why = "the model's default"
    floor = int(getattr(params_type, "MIN_WINDOW_STEPS", MIN_WINDOW_STEPS // 2))
    if getattr(params_type, "WINDOW_IS_A_WEEK", False) and not preset:
        window = max(floor, min(MAX_NETWORK_WINDOW_STEPS, tb.week))
        why = f"one week of steps, at most {MAX_NETWORK_WINDOW_STEPS}"
    if n_train is not None and n_train < 3 * window:
        window = max(floor, n_train // 3)
        why = f"3 windows must fit in the {tb.describe(n_train)} of training data"
    return window, why


def _fit_reference(
    base: Any, tb: TimeBase, window: int, n_train: int, *, try_days: bool, daily: bool
) -> list[tuple[str, Any, str]]:
    """``(field, value, why)`` of the reference a series' history holds: the most weeks
    that fit, else (``try_days``) the most days, else none."""
    weeks = _fitting_count(REFERENCE_WEEKS_CHOICES, tb.week, window, n_train, base.reference_weeks)
    days = (
        0
        if weeks or not try_days
        else _fitting_count(REFERENCE_DAYS_CHOICES, tb.day, window, n_train)
    )
    if weeks:
        why = f"{weeks} weeks fit in the training data ({tb.describe(n_train)})"
        return [("reference_period", "week", "weeks fit"), ("reference_weeks", weeks, why)]
    if days:
        why = (
            f"no weekly reference fits ({tb.describe(n_train)} of training data), "
            f"{days} days do: each step is modelled against the same time of day"
        )
        return [("reference_period", "day", why), ("reference_weeks", days, why)]
    need = REFERENCE_WEEKS_CHOICES[-1] * tb.week + 3 * window + tb.week
    why = (
        f"too little history for a same-hour-of-week reference: "
        f"{REFERENCE_WEEKS_CHOICES[-1]} weeks need {tb.describe(need)} of training "
        f"data, this series has {tb.describe(n_train)}"
        if need > n_train
        else f"{REFERENCE_WEEKS_CHOICES[-1]} weeks of {tb.week} steps exceed the "
        f"{MAX_DEFAULT_WINDOW_STEPS}-step window limit (--reference-weeks sets it)"
    )
    if daily:
        why += f"; no daily reference of {REFERENCE_DAYS_CHOICES[-1]}+ days fits either"
    return [("reference_weeks", 0, why)]


def _fit_epochs(base: Any, n_train: int, choose: Callable[[str, Any, str], None]) -> None:
    """Fewer epochs (and a shorter KL warm-up and patience) for a series with more than
    ``EPOCH_REFERENCE_WINDOWS`` training windows (about one per observed train step); a
    detector without epochs (one that does not train a network) is left alone."""
    if "epochs" not in type(base).model_fields:
        return
    epochs = int(base.epochs)
    if n_train <= EPOCH_REFERENCE_WINDOWS or epochs <= MIN_EPOCHS:
        return
    fitted = max(MIN_EPOCHS, round(epochs * EPOCH_REFERENCE_WINDOWS / n_train))
    if fitted >= epochs:
        return
    scale = fitted / epochs
    why = (
        f"about {n_train} training windows, {n_train / EPOCH_REFERENCE_WINDOWS:.1f}x the "
        f"{EPOCH_REFERENCE_WINDOWS} the default {epochs} epochs are set for: {fitted} epochs "
        "take about as many optimiser steps (--epochs sets it)"
    )
    choose("epochs", fitted, why)
    warmup = getattr(base, "kl_warmup_epochs", None)
    if warmup:
        choose("kl_warmup_epochs", max(1, round(warmup * scale)), f"scaled with epochs ({why})")
    choose(
        "patience",
        max(MIN_PATIENCE, round(int(base.patience) * scale)),
        "early stopping scaled with epochs",
    )
