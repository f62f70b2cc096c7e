"""Scoring a whole CSV offline through the stream's own code path.

``score_frame`` replays each combo's hours through ``advance`` (the stream's state
rule) and scores the ready windows with ``score_emissions`` (the stream's scorer), so
``python -m app.score`` and the Spark job produce the same records for the same input.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from app.config import DEFAULT_MAX_AHEAD_STEPS
from app.streaming.scorer import score_emissions
from app.streaming.state import ComboWindowState, StepCount, advance

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
