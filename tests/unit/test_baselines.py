"""Seasonal robust z-score baseline: causality, warm-up, detection, speed."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from app.baselines import SeasonalBaseline, seasonal_reference, seasonal_robust_z
from app.errors import ContractError

N_HOURS = 24 * 7 * 6


def _seasonal(n: int = N_HOURS, seed: int = 0) -> tuple[np.ndarray, pd.DatetimeIndex]:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2025-01-06", periods=n, freq="h", tz="UTC")
    hours = np.arange(n)
    level = 300 + 150 * np.sin(2 * np.pi * hours / 24) + 80 * (ts.dayofweek >= 5)
    return rng.poisson(level).astype(float), ts


def test_no_look_ahead() -> None:
    x, ts = _seasonal()
    before = seasonal_robust_z(x, ts)
    t = 24 * 7 * 5 + 7
    changed = x.copy()
    changed[t] = 10_000.0
    changed[t + 30 :] = np.nan
    after = seasonal_robust_z(changed, ts)
    np.testing.assert_array_equal(after[:t], before[:t])
    assert after[t] > before[t]


def test_catches_obvious_spike_in_sine_series() -> None:
    x, ts = _seasonal()
    t = N_HOURS - 50
    x[t] *= 2.5
    z = seasonal_robust_z(x, ts)
    assert int(np.nanargmax(z)) == t
    assert z[t] > 10
    weekly = np.delete(z, t)[24 * 7 * 3 :]  # once the same-hour-of-week reference is full
    assert np.nanpercentile(weekly, 99) < 5


def test_warm_up_missing_values_and_fallback() -> None:
    x, ts = _seasonal()
    x[1000] = np.nan
    ref = seasonal_reference(x, ts)
    z = seasonal_robust_z(x, ts)
    assert np.isnan(z[: 24 * 3]).all()  # fewer than 3 earlier days
    assert np.isfinite(z[24 * 3 : 24 * 4]).all()  # daily fallback from day 3
    assert not ref.weekly[24 * 7 * 3 - 1] and ref.weekly[24 * 7 * 3]
    assert np.isnan(z[1000])
    assert ref.n_history[24 * 7 * 5] == 4
    weekly_only = SeasonalBaseline(days=0).score(x, ts)
    assert np.isnan(weekly_only[: 24 * 7 * 3]).all()
    assert np.isfinite(weekly_only[24 * 7 * 3 : 24 * 7 * 4]).all()


def test_gaps_in_timestamps_do_not_shift_the_season() -> None:
    x, ts = _seasonal()
    keep = np.ones(N_HOURS, dtype=bool)
    keep[2000:2010] = False  # rows absent, not NaN
    z_full = seasonal_robust_z(np.where(keep, x, np.nan), ts)
    z_gappy = seasonal_robust_z(x[keep], ts[keep])
    np.testing.assert_array_equal(z_gappy, z_full[keep])


def test_mad_zero_gives_finite_score_via_eps() -> None:
    ts = pd.date_range("2025-01-06", periods=24 * 7 * 5, freq="h")
    x = np.full(ts.size, 10.0)
    x[-1] = 13.0
    z = seasonal_robust_z(x, ts, poisson_floor=False, eps=1.0)
    assert z[-1] == pytest.approx(3.0)
    assert np.nanmax(z[:-1]) == 0.0


def test_baseline_class_band_and_expected() -> None:
    x, ts = _seasonal()
    baseline = SeasonalBaseline()
    expected = baseline.expected(x, ts)
    lower, upper = baseline.band(x, ts, z=4.0)
    score = baseline.score(x, ts)
    ok = np.isfinite(score)
    outside = (x < lower) | (x > upper)
    np.testing.assert_array_equal(outside[ok], score[ok] > 4.0)
    assert np.all((lower <= expected) | np.isnan(expected))
    assert baseline.history_hours == 24 * 7 * 4
    assert baseline.to_dict()["name"] == "seasonal_z"


def test_fast_on_four_combos() -> None:
    series = [_seasonal(4000, seed) for seed in range(4)]
    t0 = time.perf_counter()
    for x, ts in series:
        seasonal_robust_z(x, ts)
    assert time.perf_counter() - t0 < 0.5


def test_validation_errors() -> None:
    x, ts = _seasonal(100)
    with pytest.raises(ContractError, match="length 99"):
        seasonal_robust_z(x, ts[:99])
    with pytest.raises(ContractError, match="strictly increasing"):
        seasonal_robust_z(x, ts[::-1])
    with pytest.raises(ContractError, match="whole hours"):
        seasonal_robust_z(x, ts + pd.Timedelta(minutes=5))
    with pytest.raises(ContractError, match="min_history"):
        SeasonalBaseline(weeks=2, days=0, min_history=3)
    assert seasonal_robust_z(np.zeros(0), ts[:0]).shape == (0,)
