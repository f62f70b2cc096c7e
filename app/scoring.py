"""Scoring a whole CSV offline through the stream's own code path, and combining scores.

``score_frame`` replays each combo's hours through ``advance`` (the stream's state
rule) and scores the ready windows with ``score_emissions`` (the stream's scorer), so
``python -m app.score`` and the Spark job produce the same records for the same input.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from app.catalog import PRIMARY
from app.config import DEFAULT_MAX_AHEAD_STEPS
from app.postprocess.decision import EnsembleDecision
from app.streaming.scorer import score_emissions
from app.streaming.state import ComboWindowState, StepCount, advance

if TYPE_CHECKING:
    from app.registry import ComboBundle

log = logging.getLogger(__name__)


def emissions_frame(
    frame: pd.DataFrame,
    *,
    window: int,
    max_gap_steps: int,
    step_seconds: int = 3600,
    max_ahead_steps: int | None = DEFAULT_MAX_AHEAD_STEPS,
) -> pd.DataFrame:
    """Feed every observed hour of every combo through ``advance``, in time order.

    ``frame`` is the long frame of ``app.data.load_counts`` (missing hours are not fed:
    ``advance`` reports them as ``missing`` itself, as the stream does).  ``max_ahead_steps``
    is the stream's ``MAX_AHEAD_STEPS`` rule (same default): on time-ordered data it never
    drops an hour (a long gap is confirmed by the hour after it); only a combo's very last
    hour, when it follows a gap longer than that, stays held (not emitted), as in the stream.
    """
    rows: list[dict[str, Any]] = []
    for combo, series in frame.groupby("combo", sort=True):
        seen = series[~series["missing"]].sort_values("timestamp")
        steps = (seen["timestamp"].astype("int64") // 10**9 // step_seconds).to_numpy()
        counts = seen["value"].to_numpy(dtype=np.float64)
        feed = [StepCount(str(combo), int(s), float(c)) for s, c in zip(steps, counts, strict=True)]
        _, emissions = advance(
            ComboWindowState(str(combo)),
            feed,
            window=window,
            max_gap_steps=max_gap_steps,
            max_ahead_steps=max_ahead_steps,
        )
        rows.extend(e.to_record() for e in emissions)
    return pd.DataFrame(
        rows, columns=["combo", "step", "status", "count", "window_values", "reason"]
    )


def score_frame(
    frame: pd.DataFrame,
    registry: Any,
    *,
    window: int,
    max_gap_steps: int,
    step_seconds: int = 3600,
    seed: int = 0,
    max_ahead_steps: int | None = DEFAULT_MAX_AHEAD_STEPS,
) -> pd.DataFrame:
    """Score every hour of every combo causally; one row per hour (the scored-hour contract)."""
    emissions = emissions_frame(
        frame,
        window=window,
        max_gap_steps=max_gap_steps,
        step_seconds=step_seconds,
        max_ahead_steps=max_ahead_steps,
    )
    records, _ = score_emissions(
        emissions, registry, step_seconds=step_seconds, seed=seed, scored_at="offline"
    )
    out = pd.DataFrame(records)
    out["timestamp"] = pd.to_datetime(out["hour"], utc=True)
    return out


def combine_bundle_scores(
    bundle: ComboBundle, windows: NDArray[np.float64], seeds: NDArray[np.int64]
) -> dict[str, Any]:
    """Score windows with the bundle's detectors and decide (see ``ComboBundle.score``).

    Each detector sees its own window length (the newest steps of the bundle's window) and
    its own ``Decision`` calibrates its score; the bundle's decision (one detector's, or the
    ensemble's over all of them) gives the score, the threshold and the flags. The
    expected band is the primary detector's.
    """
    last = windows[:, -1]
    out: dict[str, Any] = {}
    calibrated: dict[str, NDArray[np.float64]] = {}
    expected = low = high = None
    for name, model in bundle.models.items():
        details = model.score_details(np.ascontiguousarray(windows[:, -model.window :]), seeds)
        raw = np.asarray(details.score, dtype=np.float64)
        decision = bundle.decisions.get(name)
        calibrated[name] = decision.calibrate(raw) if decision is not None else raw
        out[f"{name}_score"], out[f"{name}_calibrated"] = raw, calibrated[name]
        if name == PRIMARY:
            expected = np.asarray(details.expected, dtype=np.float64)
            low = getattr(details, "expected_low", None)
            high = getattr(details, "expected_high", None)
    assert expected is not None, "a bundle always holds its primary detector"
    out["expected"], out["expected_low"], out["expected_high"] = expected, low, high

    rule = bundle.decision()
    if isinstance(rule, EnsembleDecision):
        out["score"] = rule.combine(calibrated)
    else:
        out["score"] = calibrated[bundle.detector]
    out["threshold"] = np.full(len(last), rule.threshold)
    rate = (rule.operating_point or {}).get("alarm_runs_per_day")
    out["false_alarms_per_day"] = np.full(len(last), np.nan if rate is None else float(rate))
    out["is_anomaly"] = rule.flags(out["score"])
    out["direction"] = np.where(out["is_anomaly"], np.where(last >= expected, "spike", "dip"), None)
    return out
