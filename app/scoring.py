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

from app.config import DEFAULT_MAX_AHEAD_STEPS
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


def _calibrate(state: Any, raw: NDArray[np.float64]) -> NDArray[np.float64]:
    if state is None:
        return raw
    return np.asarray(state.transform(raw), dtype=np.float64)


def combine_bundle_scores(
    bundle: ComboBundle, windows: NDArray[np.float64], seeds: NDArray[np.int64]
) -> dict[str, Any]:
    """Score windows with the bundle's detectors and decide (see ``ComboBundle.score``)."""
    from app.registry import _calibrator

    last = windows[:, -1]
    out: dict[str, Any] = {}
    details = bundle.fcvae.score_details(
        np.ascontiguousarray(windows[:, -bundle.fcvae.window :]), seeds
    )
    decision = bundle.fcvae_meta.get("decision", {})
    fcal = _calibrator(decision.get("calibrator"))
    out["fcvae_score"] = np.asarray(details.score, dtype=np.float64)
    out["fcvae_calibrated"] = _calibrate(fcal, out["fcvae_score"])
    expected = np.asarray(details.expected, dtype=np.float64)
    low, high = getattr(details, "expected_low", None), getattr(details, "expected_high", None)
    out["expected"], out["expected_low"], out["expected_high"] = expected, low, high

    vdecision: dict[str, Any] = {}
    if bundle.vaegan is not None:
        # Each detector sees its own window length: the newest hours of the bundle's window.
        vdetails = bundle.vaegan.score_details(
            np.ascontiguousarray(windows[:, -bundle.vaegan.window :]), seeds
        )
        vdecision = bundle.vaegan_meta.get("decision", {})
        out["vaegan_score"] = np.asarray(vdetails.score, dtype=np.float64)
        out["vaegan_calibrated"] = _calibrate(
            _calibrator(vdecision.get("calibrator")), out["vaegan_score"]
        )
    if bundle.detector == "ensemble":
        from app.postprocess.combine import combine_calibrated

        out["score"] = combine_calibrated(
            out["fcvae_calibrated"], out["vaegan_calibrated"], bundle.ensemble
        )
        out["threshold"] = np.full(len(last), float(bundle.ensemble["threshold"]))
    elif bundle.detector == "vaegan":
        out["score"] = out["vaegan_calibrated"]
        out["threshold"] = np.full(len(last), float(vdecision["threshold_calibrated"]))
    else:
        out["score"] = out["fcvae_calibrated"]
        out["threshold"] = np.full(len(last), float(decision["threshold_calibrated"]))
    op = (
        bundle.ensemble.get("operating_point")
        if bundle.detector == "ensemble"
        else (vdecision if bundle.detector == "vaegan" else decision).get("operating_point")
    )
    rate = (op or {}).get("alarm_runs_per_day")
    out["false_alarms_per_day"] = np.full(len(last), np.nan if rate is None else float(rate))
    out["is_anomaly"] = out["score"] > out["threshold"]
    out["direction"] = np.where(out["is_anomaly"], np.where(last >= expected, "spike", "dip"), None)
    return out
