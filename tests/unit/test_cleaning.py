"""Seasonal window cleaning and profiles (``app.detectors.cleaning``) and their use in
FCVAE scoring."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.detectors.cleaning import lagged_median, seasonal_clean, seasonal_profile
from app.detectors.fcvae import FCVAEDetector

PERIOD = 24

#: Three windows of 4.5 "days" of 6 steps, counts with missing steps.
WINDOWS_WITH_GAPS = arrays(
    np.float64, (3, 4 * 6 + 3), elements=st.one_of(st.floats(0, 1e4), st.just(np.nan))
)


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
@given(WINDOWS_WITH_GAPS)
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


def test_profile_is_the_past_median_of_each_time_of_day() -> None:
    w = _weekly(n_days=7, seed=2)
    profile = seasonal_profile(w[None, :], period=PERIOD)[0]
    for hour in (0, 5, 23):
        same = w[hour::PERIOD]
        past = same[:-1] if hour == 23 else same  # the scored (last) value is left out
        assert profile[hour] == pytest.approx(np.median(past))
        np.testing.assert_array_equal(profile[hour::PERIOD], profile[hour])


def test_the_scored_value_never_informs_its_profile() -> None:
    w = _weekly(n_days=7, seed=4)
    spiked = w.copy()
    spiked[-1] = 1e6
    np.testing.assert_array_equal(
        seasonal_profile(w[None, :], period=PERIOD),
        seasonal_profile(spiked[None, :], period=PERIOD),
    )


def test_profile_falls_back_to_the_level() -> None:
    w = _weekly(n_days=7, seed=5)
    w[PERIOD - 1 :: PERIOD] = np.nan  # the last point's time of day is missing in the past
    w[-1] = 7.0
    level = np.nanmedian(w[:-1])
    assert seasonal_profile(w[None, :], period=PERIOD)[0, -1] == pytest.approx(level)
    short = _weekly(n_days=1)  # shorter than min_periods: the level everywhere
    np.testing.assert_allclose(
        seasonal_profile(short[None, :], period=PERIOD)[0], np.median(short[:-1])
    )
    assert seasonal_profile(np.full((1, 48), np.nan), period=PERIOD).tolist() == [[0.0] * 48]


@settings(max_examples=60, deadline=None)
@given(WINDOWS_WITH_GAPS)
def test_profile_and_reference_work_row_by_row(windows: np.ndarray) -> None:
    out = seasonal_profile(windows, period=6)
    assert out.shape == windows.shape and np.isfinite(out).all()
    ref = lagged_median(windows, lag=6, count=3)
    for last in (1, 5, windows.shape[1]):  # only the last steps: the same values
        np.testing.assert_array_equal(
            lagged_median(windows, lag=6, count=3, last=last), ref[:, -last:]
        )
    for i in range(len(windows)):
        np.testing.assert_array_equal(seasonal_profile(windows[i : i + 1], period=6)[0], out[i])
        np.testing.assert_array_equal(lagged_median(windows[i], lag=6, count=3), ref[i])


def test_lagged_median_uses_only_earlier_weeks() -> None:
    series = np.arange(10.0)
    ref = lagged_median(series, lag=3, count=2)
    np.testing.assert_array_equal(ref[:3], np.nan)
    assert ref[3] == 0.0 and ref[6] == 1.5 and ref[9] == 4.5  # median of (6, 3)
    spiked = series.copy()
    spiked[-1] = 1e9
    np.testing.assert_array_equal(lagged_median(spiked, lag=3, count=2), ref)
    gaps = series.copy()
    gaps[3] = np.nan
    assert lagged_median(gaps, lag=3, count=2)[6] == 0.0  # the missing week is left out
    windows = np.stack([series, series + 1])
    np.testing.assert_array_equal(lagged_median(windows, lag=3, count=2)[1], ref + 1)


WEEK = 7 * PERIOD


def _weeks(n_weeks: int, seed: int) -> np.ndarray:
    """Hourly counts with a daily cycle and quieter weekends (a weekly shape)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(n_weeks * WEEK)
    weekend = (hours // PERIOD) % 7 >= 5
    level = 500 * (1 + 0.6 * np.sin(2 * np.pi * hours / PERIOD)) * np.where(weekend, 0.5, 1.0)
    return level * np.exp(rng.normal(0, 0.04, size=hours.size))


@pytest.fixture(scope="module")
def referenced() -> tuple[FCVAEDetector, np.ndarray]:
    params = FCVAEDetector.tiny_params().model_copy(update={"reference_weeks": 2, "epochs": 4})
    series = _weeks(10, seed=6)
    detector = FCVAEDetector(params)
    detector.fit(series[: 7 * WEEK], val=series[7 * WEEK :], seed=0, progress=False)
    return detector, series


def test_fcvae_reference_weeks_widen_the_window_and_follow_the_week(
    referenced: tuple[FCVAEDetector, np.ndarray],
) -> None:
    detector, series = referenced
    assert detector.window == 24 + 2 * WEEK
    windows = np.lib.stride_tricks.sliding_window_view(series, detector.window)[-WEEK:]
    seeds = np.arange(len(windows), dtype=np.int64)
    details = detector.score_details(windows, seeds)
    # The expectation follows the weekly shape (quiet weekends included) within a few %.
    error = np.abs(np.log(details.expected / windows[:, -1]))
    assert np.median(error) < 0.1
    # A -50% dip on a weekday afternoon scores far above ordinary hours.
    dipped = windows[100:101].copy()
    dipped[0, -1] *= 0.5
    ordinary = details.score
    assert detector.score(dipped, seeds[100:101])[0] > np.quantile(ordinary, 0.99)


def test_fcvae_reference_scores_stay_batch_independent_and_round_trip(
    referenced: tuple[FCVAEDetector, np.ndarray], tmp_path
) -> None:
    detector, series = referenced
    windows = np.lib.stride_tricks.sliding_window_view(series, detector.window)[::13]
    windows = windows.copy()
    windows[2, 50:60] = np.nan  # gaps, including in the reference weeks
    windows[3, -1 - WEEK] = 0.0  # an outage exactly one week before the scored hour
    seeds = np.arange(len(windows), dtype=np.int64)
    details = detector.score_details(windows, seeds)
    assert np.isfinite(details.score).all()
    alone = [detector.score(windows[i : i + 1], seeds[i : i + 1])[0] for i in range(4)]
    np.testing.assert_array_equal(alone, details.score[:4])
    detector.save(tmp_path / "m")
    loaded = FCVAEDetector.load(tmp_path / "m")
    assert loaded.window == detector.window
    np.testing.assert_array_equal(loaded.score_details(windows, seeds).score, details.score)


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 8, 9, 13])
def test_nanmedian_axis1_is_numpys_nanmedian_bit_for_bit(d: int) -> None:
    """The sorting network (d <= NETWORK_MAX) and the sort fallback give np.nanmedian's
    values exactly: ties, gaps, all-missing slices, and slices without any gap."""
    import warnings

    from app.detectors.cleaning import nanmedian_axis1

    rng = np.random.default_rng(d)
    for share in (0.0, 0.1, 0.5, 0.9):
        x = rng.normal(size=(40, d, 29))
        x[:, :, :4] = np.round(x[:, :, :4])  # ties
        x[rng.random(x.shape) < share] = np.nan
        x[0] = np.nan  # whole slices missing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(x, axis=1)
        assert np.array_equal(nanmedian_axis1(x), expected, equal_nan=True)


def test_lagged_median_views_and_padded_planes_agree_with_a_plain_loop() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 200))
    x[rng.random(x.shape) < 0.2] = np.nan
    got = lagged_median(x, lag=24, count=4, last=120)
    for i in range(3):
        for j, t in enumerate(range(80, 200)):
            past = [x[i, t - k * 24] for k in range(1, 5) if t - k * 24 >= 0]
            past = [v for v in past if not np.isnan(v)]
            want = np.median(past) if past else np.nan
            assert np.array_equal(got[i, j], want, equal_nan=True)
