"""The seasonal baseline at steps other than an hour: lags are a day / a week of steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.baselines import SeasonalBaseline, season_lags, seasonal_reference, seasonal_robust_z
from app.errors import ContractError


def _hourly(n_days: int = 42, seed: int = 0) -> tuple[np.ndarray, pd.DatetimeIndex]:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2025-01-06", periods=24 * n_days, freq="h", tz="UTC")
    level = 300 + 150 * np.sin(2 * np.pi * np.arange(ts.size) / 24) + 80 * (ts.dayofweek >= 5)
    return rng.poisson(level).astype(float), ts


def test_hourly_default_equals_explicit_step() -> None:
    x, ts = _hourly()
    keep = np.random.default_rng(1).random(x.size) > 0.1
    a = seasonal_robust_z(x[keep], ts[keep])
    b = seasonal_robust_z(x[keep], ts[keep], step_seconds=3600)
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("step", [60, 300, 1800])
def test_finer_grid_of_repeated_hours_gives_the_hourly_reference(step: int) -> None:
    """Each hour's value repeated on a finer grid: the same lag in time, the same median."""
    x, ts = _hourly(n_days=30)
    per_hour = 3600 // step
    fine_x = np.repeat(x, per_hour)
    fine_ts = pd.date_range(ts[0], periods=fine_x.size, freq=f"{step}s")
    hourly = seasonal_reference(x, ts)
    fine = seasonal_reference(fine_x, fine_ts, step_seconds=step)
    np.testing.assert_array_equal(fine.expected[::per_hour], hourly.expected)
    np.testing.assert_array_equal(fine.weekly[::per_hour], hourly.weekly)
    baseline = SeasonalBaseline(step_seconds=step)
    assert baseline.history_steps == 4 * 7 * 86_400 // step
    assert baseline.history_hours == 24 * 7 * 4
    assert baseline.to_dict()["step_seconds"] == step


def test_lags_and_grid_errors() -> None:
    assert season_lags(60, weeks=1, days=2) == ([10_080], [1_440, 2_880])
    with pytest.raises(ContractError, match="divide a day"):
        SeasonalBaseline(step_seconds=7 * 60 + 1)
    with pytest.raises(ContractError, match="positive"):
        SeasonalBaseline(step_seconds=0)
    ts = pd.date_range("2025-01-06", periods=10, freq="5min") + pd.Timedelta(seconds=30)
    with pytest.raises(ContractError, match="300-second grid"):
        seasonal_robust_z(np.ones(10), ts, step_seconds=300)
