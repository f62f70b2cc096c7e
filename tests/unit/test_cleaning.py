"""Seasonal window cleaning (``app.detectors.cleaning``) and its use in FCVAE scoring."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.detectors.cleaning import seasonal_clean
from app.detectors.fcvae import FCVAEDetector

PERIOD = 24


def _weekly(n_days: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = np.arange(n_days * PERIOD)
    daily = 500 + 300 * np.sin(2 * np.pi * hours / PERIOD)
    return daily + rng.normal(0, 15, size=hours.size)


def test_a_past_outage_is_replaced_by_its_time_of_day_median() -> None:
    w = _weekly()
    clean = seasonal_clean(w[None, :], k=3, period=PERIOD)[0]
    planted = w.copy()
    planted[50:53] = 1.0  # a three-hour outage on day 3
    cleaned = seasonal_clean(planted[None, :], k=3, period=PERIOD)[0]
    same_hour = [w[h] for h in range(50 % PERIOD, w.size, PERIOD) if h not in (50,)]
    assert cleaned[50] == pytest.approx(np.median([*same_hour[:6]]), rel=0.05)
    assert (cleaned[50:53] > 100).all()
    # Ordinary hours are left as they are, with or without the outage.
    untouched = np.ones(w.size, bool)
    untouched[50:53] = False
    np.testing.assert_array_equal(cleaned[untouched], clean[untouched])


def test_ordinary_noise_is_left_alone() -> None:
    w = _weekly(seed=3)
    np.testing.assert_array_equal(seasonal_clean(w[None, :], k=3, period=PERIOD)[0], w)


def test_the_scored_point_is_never_changed() -> None:
    w = _weekly()
    w[-1] = 1e6
    assert seasonal_clean(w[None, :], k=3, period=PERIOD)[0, -1] == 1e6


def test_short_windows_are_returned_unchanged() -> None:
    w = _weekly(n_days=2)
    w[5] = 1e5
    np.testing.assert_array_equal(seasonal_clean(w[None, :], k=3, period=PERIOD)[0], w)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        (3, 4 * 6 + 3),
        elements=st.one_of(st.floats(0, 1e4), st.just(np.nan)),
    )
)
def test_row_by_row_nan_preserving_and_last_point_kept(windows: np.ndarray) -> None:
    out = seasonal_clean(windows, k=3, period=6)
    assert out.shape == windows.shape
    np.testing.assert_array_equal(np.isnan(out), np.isnan(windows))
    np.testing.assert_array_equal(out[:, -1], windows[:, -1])
    for i in range(len(windows)):  # a window's result never depends on its batch
        np.testing.assert_array_equal(seasonal_clean(windows[i : i + 1], k=3, period=6)[0], out[i])


def test_fcvae_scores_the_cleaned_window() -> None:
    params = FCVAEDetector.tiny_params().model_copy(
        update={"window": 4 * PERIOD, "sub_window": 8, "clean_k": 3.0, "epochs": 2}
    )
    series = _weekly(n_days=30, seed=1)
    detector = FCVAEDetector(params)
    detector.fit(series, seed=0, progress=False)
    dirty = series[-4 * PERIOD :].copy()
    dirty[40:44] = 0.0  # an outage two days back
    seeds = np.array([7])
    off = copy.copy(detector)  # the same network and normalisation, cleaning off
    off.params = params.model_copy(update={"clean_k": None})
    cleaned = seasonal_clean(dirty[None, :], k=3.0, period=PERIOD)
    assert detector.score(dirty[None, :], seeds)[0] == off.score(cleaned, seeds)[0]
    assert detector.score(dirty[None, :], seeds)[0] != off.score(dirty[None, :], seeds)[0]
