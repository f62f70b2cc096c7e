"""Calibration, threshold search, anomaly injection and intervals."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest

from app.errors import ArtifactError, ContractError, DataError, NotFittedError
from app.evaluation import events_from_labels
from app.postprocess import (
    EmpiricalCalibrator,
    ThresholdChoice,
    choose_threshold,
    flags_to_intervals,
    inject_anomalies,
    pick_among_ties,
    threshold_for_false_alarm_rate,
)

# --------------------------------------------------------------------------- calibration


def test_calibrator_matches_exponential_tail() -> None:
    rng = np.random.default_rng(1)
    cal = EmpiricalCalibrator().fit(rng.exponential(2.0, 20_000))
    # -log10 P(S >= s) = s / (2 ln 10) for an exponential of scale 2.
    s = np.array([2 * math.log(10), 2 * math.log(100), 2 * math.log(1e6)])
    np.testing.assert_allclose(cal.transform(s), [1.0, 2.0, 6.0], atol=0.15)


def test_calibrator_monotone_finite_and_nan() -> None:
    rng = np.random.default_rng(2)
    cal = EmpiricalCalibrator().fit(rng.normal(size=500))
    x = np.linspace(-10, 1e6, 10_001)
    y = cal.transform(x)
    assert np.isfinite(y).all()
    assert (np.diff(y) >= 0).all()
    assert y[0] == 0.0
    assert y[-1] > y[len(y) // 2] > 10  # keeps growing beyond the clean range
    assert np.isnan(cal.transform([np.nan]))[0]
    assert np.isfinite(cal.transform([1e308, np.inf])).all()


def test_calibrator_handles_ties_and_constant_scores() -> None:
    zeros_then_tail = np.concatenate([np.zeros(900), np.arange(1.0, 101.0)])
    cal = EmpiricalCalibrator().fit(zeros_then_tail)
    assert cal.transform([0.0])[0] == 0.0  # a tie with most clean scores is not surprising
    assert cal.transform([50.0])[0] > cal.transform([1.0])[0] > 0
    const = EmpiricalCalibrator().fit(np.full(50, 3.0))
    assert const.transform([3.0])[0] == 0.0
    assert const.transform([3.1])[0] > 5


def test_calibrator_round_trip_through_json() -> None:
    rng = np.random.default_rng(3)
    cal = EmpiricalCalibrator(step_decades=0.5).fit(rng.gamma(2.0, size=1000))
    state = json.loads(json.dumps(cal.to_dict(), allow_nan=False))
    restored = EmpiricalCalibrator.from_dict(state)
    x = np.linspace(-1, 40, 200)
    np.testing.assert_array_equal(restored.transform(x), cal.transform(x))
    assert restored.step_decades == 0.5
    assert "anchors" in repr(restored)


def test_calibrator_errors() -> None:
    with pytest.raises(NotFittedError):
        EmpiricalCalibrator().transform([1.0])
    with pytest.raises(DataError, match="got 3"):
        EmpiricalCalibrator().fit([1.0, 2.0, np.nan, 3.0])
    good = EmpiricalCalibrator().fit(np.arange(100.0)).to_dict()
    with pytest.raises(ArtifactError, match="kind"):
        EmpiricalCalibrator.from_dict({**good, "kind": "other"})
    with pytest.raises(ArtifactError, match="monotone"):
        EmpiricalCalibrator.from_dict({**good, "anchors_score": good["anchors_score"][::-1]})
    with pytest.raises(ArtifactError, match="tail_scale"):
        EmpiricalCalibrator.from_dict({k: v for k, v in good.items() if k != "tail_scale"})


def test_calibration_makes_detectors_comparable() -> None:
    rng = np.random.default_rng(4)
    clean_a = rng.exponential(1.0, 5000)
    clean_b = 1000 * rng.exponential(1.0, 5000) + 50
    cal_a = EmpiricalCalibrator().fit(clean_a)
    cal_b = EmpiricalCalibrator().fit(clean_b)
    q = np.quantile(clean_a, 0.99)
    assert cal_a.transform([q])[0] == pytest.approx(cal_b.transform([1000 * q + 50])[0], abs=0.15)


# --------------------------------------------------------------------------- injection


def _series(n: int = 24 * 7 * 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = np.arange(n)
    return rng.poisson(200 + 100 * np.sin(2 * np.pi * hours / 24)).astype(float)


def test_inject_anomalies_places_labelled_spikes_and_dips() -> None:
    x = _series()
    x[100:110] = np.nan
    protect = np.zeros(x.size, dtype=bool)
    protect[500:503] = True
    rng = np.random.default_rng(7)
    new, labels, ids = inject_anomalies(x, rng, n_events=12, protect=protect, min_gap_steps=24)
    events = events_from_labels(labels, ids)
    assert len(events) == 12
    assert sorted(set(ids[labels].tolist())) == list(range(12))
    assert (ids[~labels] == -1).all()
    assert np.isnan(new[100:110]).all()
    assert not labels[100:110].any()
    assert not labels[500 - 24 : 503 + 24].any()
    np.testing.assert_array_equal(new[~labels & np.isfinite(x)], x[~labels & np.isfinite(x)])
    starts = [s for s, _ in events]
    assert np.all(np.diff(starts) > 24)
    for start, end in events:
        assert 1 <= end - start + 1 <= 3
        ratio = new[start : end + 1] / x[start : end + 1]
        spike = (ratio >= 1.3 - 0.02) & (ratio <= 3.0 + 0.02)
        dip = (ratio >= -0.001) & (ratio <= 0.6 + 0.02)
        assert spike.all() or dip.all(), (start, end, ratio)
    assert np.array_equal(ids[labels], np.sort(ids[labels]))  # ids in time order


def test_inject_anomalies_is_seeded_and_does_not_touch_input() -> None:
    x = _series()
    before = x.copy()
    a = inject_anomalies(x, np.random.default_rng(3), n_events=5)
    b = inject_anomalies(x, np.random.default_rng(3), n_events=5)
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)
    np.testing.assert_array_equal(x, before)


def test_inject_anomalies_fewer_when_no_room(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        _, _, ids = inject_anomalies(
            np.full(60, 10.0), np.random.default_rng(0), n_events=10, min_gap_steps=24
        )
    assert 1 <= ids.max() + 1 < 10
    assert "fit" in caplog.text


def test_inject_anomalies_validates() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ContractError, match="wave"):
        inject_anomalies(np.ones(10), rng, n_events=1, kinds=("wave",))
    with pytest.raises(ContractError, match="Generator"):
        inject_anomalies(np.ones(10), 0, n_events=1)  # type: ignore[arg-type]
    with pytest.raises(ContractError, match="protect"):
        inject_anomalies(np.ones(10), rng, n_events=1, protect=np.zeros(3, bool))


# --------------------------------------------------------------------------- thresholds


def test_choose_threshold_event_f1_and_tie_break() -> None:
    scores = np.array([0.1, 0.2, 3.0, 0.1, 0.5, 0.2, 2.5, 0.3, 0.4, 0.2])
    labels = np.array([0, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=bool)
    choice = choose_threshold(scores, labels)
    # Any threshold in [0.5, 2.5) gives F1 = 1; the tie goes to the highest candidate 0.5.
    assert choice.threshold == 0.5
    assert choice.value == 1.0
    assert choice.feasible
    assert choice.n_candidates == len(np.unique(scores))
    json.dumps(choice.to_dict())
    assert isinstance(choice, ThresholdChoice)


def test_choose_threshold_ties_rules() -> None:
    # Event A scores 2, 4, 6 over three hours, event B 3, 5; clean hours score at most 1.
    # Every threshold from 1 to 4 catches both with no false alarm (F1 = 1).
    scores = np.array([0.0, 1.0, 0.0, 2.0, 4.0, 6.0, 0.0, 0.5, 3.0, 5.0, 0.0, 1.0])
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
    picked = {t: choose_threshold(scores, labels, ties=t) for t in ("highest", "middle", "lowest")}
    assert {t: c.threshold for t, c in picked.items()} == {
        "highest": 4.0,
        "middle": 3.0,  # midpoint 2.5 of [1, 4]; 2 and 3 are as near, the higher wins
        "lowest": 1.0,
    }
    assert all(c.value == 1.0 for c in picked.values())
    assert "ties → middle threshold" in picked["middle"].method
    with pytest.raises(ContractError, match="ties"):
        choose_threshold(scores, labels, ties="median")  # type: ignore[arg-type]


def test_pick_among_ties_takes_the_widest_run() -> None:
    c = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 20.0, 25.0, 30.0])
    # Runs of best candidates: [1, 3] (width 2) and [20, 30] (width 10); the wide one wins
    # and its middle, 25, is a candidate (index 6).
    best = np.array([False, True, True, True, False, True, True, True])
    assert pick_among_ties(c, best, "middle") == 6
    assert pick_among_ties(c, best, "highest") == 7
    assert pick_among_ties(c, best, "lowest") == 1
    assert pick_among_ties(c, np.eye(8, dtype=bool)[2], "middle") == 2  # a single best one
    with pytest.raises(ContractError, match="at least one"):
        pick_among_ties(c, np.zeros(8, bool))


def test_choose_threshold_point_f1_and_recall() -> None:
    scores = np.array([0.0, 5.0, 1.0, 0.0, 2.0, 0.0])
    labels = np.array([0, 1, 1, 0, 0, 0], dtype=bool)
    point = choose_threshold(scores, labels, objective="point_f1")
    assert point.threshold == 0.0  # flags 1, 2, 4: F1 = 0.8 beats 2/3 at 1.0
    assert point.value == pytest.approx(0.8)
    recall = choose_threshold(scores, labels, objective="event_recall")
    assert recall.threshold == 2.0 and recall.value == 1.0


def test_choose_threshold_constraints() -> None:
    # Events at 10 (score 6) and 30 (score 4); one false alarm at 20 scores 5.
    scores = np.zeros(48)
    labels = np.zeros(48, dtype=bool)
    scores[10], labels[10] = 6.0, True
    scores[30], labels[30] = 4.0, True
    scores[20] = 5.0
    unconstrained = choose_threshold(scores, labels)
    assert unconstrained.threshold == 0.0  # both events + 1 alarm: F1 = 4/5 beats 2/3
    assert unconstrained.value == pytest.approx(0.8)
    quiet = choose_threshold(scores, labels, max_false_alarms_per_day=0.0)
    assert quiet.threshold == 5.0 and quiet.value == pytest.approx(2 / 3)
    precise = choose_threshold(scores, labels, min_precision=0.99)
    assert precise.threshold == 5.0 and precise.feasible
    assert "precision >= 0.99" in precise.method
    infeasible = choose_threshold(np.full(4, 1.0), [0, 1, 0, 0], min_precision=0.5)
    assert not infeasible.feasible and infeasible.threshold == 1.0
    assert infeasible.value is None


def test_choose_threshold_caps_candidates_and_is_fast() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=4000)
    labels = np.zeros(4000, dtype=bool)
    for start in range(100, 4000, 300):
        labels[start : start + 2] = True
        scores[start : start + 2] += 4
    t0 = time.perf_counter()
    choice = choose_threshold(scores, labels, max_candidates=256)
    assert time.perf_counter() - t0 < 2.0
    assert choice.n_candidates <= 256
    assert choice.threshold in set(scores.tolist())
    assert choice.value is not None and choice.value > 0.8


def test_choose_threshold_errors() -> None:
    with pytest.raises(DataError, match="no labelled anomaly"):
        choose_threshold([1.0, 2.0], [0, 0])
    with pytest.raises(DataError, match="finite"):
        choose_threshold([np.nan, np.nan], [0, 1])
    with pytest.raises(ContractError, match="objective"):
        choose_threshold([1.0], [1], objective="auc")  # type: ignore[arg-type]


def test_threshold_for_false_alarm_rate() -> None:
    clean = np.concatenate([np.arange(1000.0), [np.nan]])
    t = threshold_for_false_alarm_rate(clean, 0.01)
    assert np.mean(clean[:1000] > t) <= 0.01
    assert t == 989.0
    with pytest.raises(ContractError, match=r"1\.5"):
        threshold_for_false_alarm_rate(clean, 1.5)


def test_flags_to_intervals() -> None:
    ts = pd.date_range("2025-03-01", periods=6, freq="h", tz="UTC")
    intervals = flags_to_intervals([1, 1, 0, 0, 1, 1], ts)
    assert intervals == [(ts[0], ts[1]), (ts[4], ts[5])]
    assert flags_to_intervals([0, 0], ts[:2]) == []
    with pytest.raises(ContractError, match="length 6"):
        flags_to_intervals([1, 0], ts)


def test_decisions_round_trip_the_shipped_artifacts_and_flag_above_threshold() -> None:
    """``Decision``/``EnsembleDecision`` are what turns scores into flags everywhere."""
    from app import PROJECT_ROOT
    from app.postprocess.decision import Decision, EnsembleDecision

    metas = sorted((PROJECT_ROOT / "models").glob("*/*/meta.json"))
    assert metas
    for path in metas:
        state = json.loads(path.read_text())["decision"]
        decision = Decision.from_dict(state)
        assert decision.to_dict() == state, path
        probe = np.array([decision.threshold - 1e-9, decision.threshold, decision.threshold + 1e-9])
        assert decision.flags(probe).tolist() == [False, False, True]
        assert not decision.flags(np.array([np.nan])).any()
    ensemble = json.loads((PROJECT_ROOT / "models" / "ensemble.json").read_text())["combos"]
    for combo, state in ensemble.items():
        rule = EnsembleDecision.from_dict(state)
        assert rule.to_dict() == state, combo
        same = np.array([rule.threshold + 1.0])
        assert rule.flags(rule.combine({"fcvae": same, "vaegan": same})).tolist() == [True]
    with pytest.raises(ValueError, match="threshold"):
        EnsembleDecision.from_dict({"mode": "max"})


def test_the_ensemble_combines_any_number_of_detectors() -> None:
    """Two detectors give ``w·fcvae + (1 − w)·vaegan``; a third joins the others' mean."""
    from app.postprocess.combine import combine_calibrated

    nan = float("nan")
    two = {"fcvae": [1.0, 4.0, nan, 2.0], "vaegan": [3.0, 0.0, 5.0, nan]}
    weighted = {"mode": "weighted", "weight_fcvae": 0.25}
    assert combine_calibrated(two, weighted).tolist() == [2.5, 1.0, 5.0, 2.0]
    three = {**two, "third": [5.0, 2.0, nan, 6.0]}
    # others' mean: (3 + 5) / 2, (0 + 2) / 2, 5 (the third missing), 6 (VAE+GAN missing)
    assert combine_calibrated(three, weighted).tolist() == [3.25, 1.75, 5.0, 5.0]
    assert combine_calibrated(three, {"mode": "max"}).tolist() == [5.0, 4.0, 5.0, 6.0]
    assert combine_calibrated({"fcvae": [1.0]}, weighted).tolist() == [1.0]
    assert np.isnan(combine_calibrated({"fcvae": [nan], "vaegan": [nan]}, weighted)).all()
    with pytest.raises(ValueError, match="needs 'fcvae' scores"):
        combine_calibrated({"vaegan": [1.0]}, weighted)
    with pytest.raises(ValueError, match="differ in shape"):
        combine_calibrated({"fcvae": [1.0], "vaegan": [1.0, 2.0]}, weighted)
    with pytest.raises(ValueError, match="unknown ensemble mode"):
        combine_calibrated(two, {"mode": "median"})
