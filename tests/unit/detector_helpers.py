"""What the FCVAE and VAE+GAN unit tests share: their series, its windows, the spike check.

What every detector must do is checked once, against all of them, in
``tests/contract/test_detector_contract.py``; these helpers serve the checks that stay per
detector.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from app.detectors.base import NetworkDetector

#: Window length of both detectors' ``tiny_params()``.
W = 24
TRAIN_HOURS = 24 * 35
VAL_HOURS = 24 * 7
SPIKE_HOURS = np.arange(TRAIN_HOURS + 30, TRAIN_HOURS + 24 * 14, 37)


def seasonal(n_hours: int, seed: int, noise: float = 15.0) -> np.ndarray:
    """Hourly counts with a daily and a weekly cycle plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_hours)
    daily = 300.0 * np.sin(2 * np.pi * t / 24) + 80.0 * np.sin(4 * np.pi * t / 24)
    weekly = 120.0 * np.sin(2 * np.pi * t / 168)
    return 1000.0 + daily + weekly + rng.normal(0.0, noise, n_hours)


def spiky_series() -> np.ndarray:
    """35 training days, then 14 days with spikes every 37 hours (+ a few missing hours)."""
    values = seasonal(TRAIN_HOURS + 24 * 14, seed=3)
    values[SPIKE_HOURS] += 450.0
    values[[100, 101, 400]] = np.nan
    return values


D = TypeVar("D", bound=NetworkDetector)


def fit_tiny(cls: type[D], series: np.ndarray) -> D:
    """A ``cls`` with its ``tiny_params()`` fitted (seed 7) on the first ``TRAIN_HOURS`` of
    ``series``, its last ``VAL_HOURS`` of them validating."""
    detector = cls(cls.tiny_params())
    val = series[TRAIN_HOURS - VAL_HOURS : TRAIN_HOURS]
    detector.fit(series[: TRAIN_HOURS - VAL_HOURS], val=val, seed=7, progress=False)
    return detector


def windows_ending_at(values: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The ``W``-hour windows of ``values`` ending at each of ``ends``."""
    return np.stack([values[e - W + 1 : e + 1] for e in ends])


def assert_every_spike_beats_clean_windows(scores: np.ndarray, ends: np.ndarray) -> None:
    """Every window ending on a spike scores above the 99th percentile of the windows that
    hold no spike (after a spike the context itself is odd, so those are left out)."""
    is_spike = np.isin(ends, SPIKE_HOURS)
    clean = np.array([not np.isin(np.arange(e - W + 1, e + 1), SPIKE_HOURS).any() for e in ends])
    threshold = np.percentile(scores[clean], 99)
    assert (scores[is_spike] > threshold).all(), (scores[is_spike], threshold)
