"""Window maths every network detector shares: statistics, cutting, robust scales, the band.

Pure numpy; no detector state.  Series and windows are float64 with NaN for a missing step;
"units" are standardised model units (``(transform(x) − mean) / std``).
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from app.errors import DataError

log = logging.getLogger(__name__)

#: 1.4826 · MAD estimates σ for normal data.
MAD_TO_SIGMA = 1.4826


def normalisation_stats(series: NDArray[np.float64], what: str = "train") -> tuple[float, float]:
    """Mean and standard deviation of a series' present values (NaN skipped).

    A constant series gets ``std = 1`` (logged), so standardising never divides by 0.

    Raises
    ------
    DataError
        Fewer than two present values.

    Examples
    --------
    >>> normalisation_stats(np.array([1.0, np.nan, 3.0]))
    (2.0, 1.0)
    """
    finite = series[~np.isnan(series)]
    if finite.size < 2:
        raise DataError(f"{what} has {finite.size} present steps; need many more")
    mean, std = float(finite.mean()), float(finite.std())
    if not std > 1e-12 * max(1.0, abs(mean)):
        log.warning("%s is constant (%.6g); using std=1 for normalisation", what, mean)
        std = 1.0
    return mean, std


def masked_windows(
    units: NDArray[np.float64], window: int, min_observed_share: float, what: str
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Every sliding window of ``units`` with at least ``min_observed_share`` present steps.

    Returns the windows' values (missing → 0, float32) and their presence mask, both
    ``(n, window)`` and C-contiguous.

    Raises
    ------
    DataError
        The series is shorter than one window.

    Examples
    --------
    >>> x, ok = masked_windows(np.array([1.0, np.nan, np.nan, 4.0]), 2, 0.5, "train")
    >>> x.tolist(), ok.tolist()
    ([[1.0, 0.0], [0.0, 4.0]], [[True, False], [False, True]])
    """
    if units.shape[0] < window:
        raise DataError(f"{what} has {units.shape[0]} steps; need at least window={window}")
    views = np.lib.stride_tricks.sliding_window_view(units, window)
    usable = ~np.isnan(views)
    keep = usable.mean(axis=1) >= min_observed_share
    keep &= usable.any(axis=1)
    values = np.where(usable, views, 0.0)[keep].astype(np.float32)
    return np.ascontiguousarray(values), np.ascontiguousarray(usable[keep])


def scorable_windows(
    series: NDArray[np.float64], window: int, min_observed_share: float
) -> NDArray[np.float64]:
    """Raw windows of ``series`` whose last step is present and enough steps are present.

    Examples
    --------
    >>> scorable_windows(np.array([1.0, 2.0, np.nan, 4.0]), 2, 0.5).tolist()
    [[1.0, 2.0], [nan, 4.0]]
    """
    if series.shape[0] < window:
        return np.empty((0, window), dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(series, window)
    present = ~np.isnan(windows)
    keep = present[:, -1] & (present.mean(axis=1) >= min_observed_share)
    return np.ascontiguousarray(windows[keep], dtype=np.float64)


def robust_stats(values: NDArray[np.float64]) -> dict[str, float]:
    """Median and robust scale ``1.4826 · MAD`` of finite values (scale > 0 guaranteed).

    Falls back to the standard deviation, then to 1.0, when the MAD is 0.

    Examples
    --------
    >>> robust_stats(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    {'median': 3.0, 'scale': 1.4826}
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"median": 0.0, "scale": 1.0}
    median = float(np.median(arr))
    scale = MAD_TO_SIGMA * float(np.median(np.abs(arr - median)))
    if not scale > 1e-12:
        scale = float(arr.std())
    if not scale > 1e-12:
        scale = 1.0
    return {"median": median, "scale": scale}


def robust_z(values: NDArray[np.float64], stats: dict[str, float]) -> NDArray[np.float64]:
    """``(values − median) / scale`` with the statistics of ``robust_stats``.

    Examples
    --------
    >>> robust_z(np.array([3.0, 6.0]), {"median": 3.0, "scale": 1.5}).tolist()
    [0.0, 2.0]
    """
    return (np.asarray(values, dtype=np.float64) - stats["median"]) / stats["scale"]


def expected_band(
    centre: NDArray[np.float64],
    spread: NDArray[np.float64],
    *,
    mean: float,
    std: float,
    log_transform: bool,
    sigmas: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The expected value and band of a last point, in raw units, never below 0.

    ``centre`` and ``spread`` are in model units.  The band is ``centre ± sigmas · spread``
    taken back to raw units; with ``log_transform`` it is asymmetric and the returned
    standard deviation is its half-width over ``sigmas``.

    Returns
    -------
    (expected, expected_std, low, high)
        float64 arrays shaped like ``centre``.

    Examples
    --------
    >>> e, sd, lo, hi = expected_band(np.array([0.0]), np.array([1.0]), mean=10.0, std=2.0,
    ...                               log_transform=False, sigmas=3.0)
    >>> e.tolist(), sd.tolist(), lo.tolist(), hi.tolist()
    ([10.0], [2.0], [4.0], [16.0])
    """

    def to_raw(units: NDArray[np.float64]) -> NDArray[np.float64]:
        out = units * std + mean
        return np.expm1(out) if log_transform else out

    if log_transform:
        expected = np.maximum(to_raw(centre), 0.0)
        low = np.maximum(to_raw(centre - sigmas * spread), 0.0)
        high = np.maximum(to_raw(centre + sigmas * spread), 0.0)
        expected_std = (high - low) / (2.0 * sigmas)
    else:
        raw_centre = to_raw(centre)
        expected_std = spread * std
        expected = np.maximum(raw_centre, 0.0)
        low = np.maximum(raw_centre - sigmas * expected_std, 0.0)
        high = np.maximum(raw_centre + sigmas * expected_std, 0.0)
    return (
        expected.astype(np.float64),
        expected_std.astype(np.float64),
        low.astype(np.float64),
        high.astype(np.float64),
    )
