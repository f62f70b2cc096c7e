"""The validation set that thresholds are chosen on (app.pipeline)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.errors import DataError
from app.pipeline import GAP, ComboSeries, calibrate_scores, validation_set
from app.postprocess.decision import Decision


def _series(n_val: int = 24 * 28) -> ComboSeries:
    rng = np.random.default_rng(0)
    n = 24 * 7 + n_val
    hours = np.arange(n)
    values = 1000 + 300 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 20, n)
    labels = np.zeros(n, dtype=bool)
    labels[300:302] = True  # one real labelled event in the validation split
    values[300:302] *= 3
    values[400] = np.nan  # a missing hour
    return ComboSeries(
        combo="demo",
        timestamps=pd.date_range("2025-01-01", periods=n, freq="h"),
        values=values,
        labels=labels,
        event_ids=np.where(labels, "demo-val-01", ""),
        split=np.array(["train"] * (24 * 7) + ["val"] * n_val),
        step_seconds=3600,
    )


def _abs_deviation(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """A stand-in detector: distance from the same hour one day before (NaN elsewhere)."""
    out = np.full(len(values), np.nan)
    pos = positions[positions >= 24]
    out[pos] = np.abs(values[pos] - values[pos - 24]) / values[pos - 24]
    return out


def test_copies_hold_their_own_injections_and_only_the_real_copy_is_clean() -> None:
    series = _series()
    n = len(series.positions("val"))
    one = validation_set(_abs_deviation, series, copies=1)
    three = validation_set(_abs_deviation, series, copies=3)
    assert len(one.raw) == 2 * n + GAP
    assert len(three.raw) == 4 * n + 3 * GAP
    # Copy 0 is the same in both (its injections keep their seed).
    np.testing.assert_array_equal(three.raw[: 2 * n + GAP], one.raw)
    np.testing.assert_array_equal(three.event_ids[: 2 * n + GAP], one.event_ids)
    assert not three.clean[n:].any()
    assert three.clean[:n].sum() == one.clean.sum() > 0
    # Each copy has its own injected hours, and event ids never repeat across copies.
    copies = [three.labels[n + GAP + k * (n + GAP) :][:n] for k in range(3)]
    assert not np.array_equal(copies[0], copies[1])
    assert not np.array_equal(copies[1], copies[2])
    ids = [set(three.event_ids[n + GAP + k * (n + GAP) :][:n]) - {""} for k in range(3)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    assert three.n_injected_events > one.n_injected_events > 0
    # The real event is labelled in every copy.
    for k in range(3):
        start = n + GAP + k * (n + GAP)
        assert three.labels[start + 300 - 24 * 7]
    with pytest.raises(DataError, match="copies"):
        validation_set(_abs_deviation, series, copies=0)


def test_calibrate_scores_records_how_the_threshold_was_chosen() -> None:
    chosen, metrics = calibrate_scores(_abs_deviation, _series(), copies=2, ties="middle")
    decision = chosen.to_dict()
    assert Decision.from_dict(decision).to_dict() == decision  # it round-trips unchanged
    assert chosen.flags(chosen.calibrate([1e9, np.nan])).tolist() == [True, False]
    assert decision["n_injected_copies"] == 2
    assert decision["calibration_split"] == "val"
    assert "ties → middle threshold" in decision["choice"]["method"]
    assert metrics["event"]["n_events"] == 1
    # The real ×3 event is caught on validation.
    assert metrics["event"]["recall"] == 1.0
