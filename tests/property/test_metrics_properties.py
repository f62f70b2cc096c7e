"""Hypothesis properties of metrics, calibration and threshold search."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.evaluation import (
    evaluate_series,
    event_metrics,
    events_from_labels,
    point_adjusted_f1,
    point_metrics,
)
from app.postprocess import EmpiricalCalibrator, choose_threshold

bools = st.integers(1, 80).flatmap(
    lambda n: st.tuples(arrays(np.bool_, n), arrays(np.bool_, n), arrays(np.bool_, n))
)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def _in_unit(value: float | None) -> bool:
    return value is None or 0.0 <= value <= 1.0


@settings(max_examples=200, deadline=None)
@given(bools)
def test_metrics_within_bounds(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    flags, labels, valid = data
    p = point_metrics(flags, labels, valid)
    e = event_metrics(flags, events_from_labels(labels), labels, valid)
    for m in (p, e):
        assert _in_unit(m["precision"]) and _in_unit(m["recall"]) and _in_unit(m["f1"])
    assert 0 <= e["detected"] <= e["n_events"]
    assert all(0 <= d < len(flags) for d in e["delays"])
    pa = point_adjusted_f1(flags, labels, valid=valid)
    assert _in_unit(pa)
    if p["f1"] is not None and pa is not None:
        assert pa >= p["f1"] - 1e-12


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 80).flatmap(lambda n: st.tuples(arrays(np.bool_, n), arrays(np.bool_, n))))
def test_all_flagged_gives_full_event_recall(data: tuple[np.ndarray, np.ndarray]) -> None:
    labels, valid = data
    events = events_from_labels(labels)
    m = event_metrics(np.ones_like(labels), events, labels)
    assert m["recall"] == (1.0 if events else None)
    assert all(d == 0 for d in m["delays"])
    if labels.all():
        assert m["false_alarms"] == 0 and m["precision"] == 1.0
    # With a valid mask, every event holding a valid point is still caught.
    masked = event_metrics(np.ones_like(labels), events, labels, valid)
    assert masked["recall"] in (1.0, None)
    assert masked["detected"] == masked["n_events"]


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.float64, st.integers(20, 200), elements=finite),
    arrays(np.float64, 50, elements=st.floats(-1e7, 1e7, allow_nan=False)),
)
def test_calibrator_monotone_and_finite(clean: np.ndarray, probe: np.ndarray) -> None:
    cal = EmpiricalCalibrator().fit(clean)
    x = np.sort(probe)
    y = cal.transform(x)
    assert np.isfinite(y).all()
    assert (y >= 0).all()
    assert (np.diff(y) >= 0).all()
    restored = EmpiricalCalibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(restored.transform(x), y)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(2, 60).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=st.floats(-100, 100) | st.just(np.nan)),
            arrays(np.bool_, n),
        )
    ),
    st.sampled_from(["event_f1", "point_f1", "event_recall"]),
)
def test_choose_threshold_stays_inside_the_given_scores(
    data: tuple[np.ndarray, np.ndarray], objective: str
) -> None:
    scores, labels = data
    labels = labels.copy()
    labels[0] = True  # at least one anomaly
    scores = scores.copy()
    scores[-1] = 1.0  # at least one finite score
    choice = choose_threshold(scores, labels, objective=objective)  # type: ignore[arg-type]
    finite_scores = scores[np.isfinite(scores)]
    assert choice.threshold in set(finite_scores.tolist())
    assert 1 <= choice.n_candidates <= finite_scores.size
    assert _in_unit(choice.value)
    r = evaluate_series(scores, choice.threshold, labels)
    json.dumps(r, allow_nan=False)
