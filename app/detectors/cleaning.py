"""Seasonal window cleaning: keep past anomalies out of what a model conditions on.

A window that still holds yesterday's outage or spike makes every later hour look odd to a
model that reads the whole window (FCVAE's frequency condition does): the alarms go on after
the event ended.  Before scoring, each past hour of the window is compared with the other
hours of the window at the same time of day; one that lies more than ``k`` robust standard
deviations from their median is replaced by that median.  The scored (last) hour is never
touched, missing hours stay missing, and each window is cleaned on its own (no batch
effects).  Measured on the validation split in TECHNICAL.md ("Window cleaning").
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.detectors.windows import MAD_TO_SIGMA

#: Up to this many values per median are ordered by a sorting network of element-wise
#: min/max (contiguous, vectorised); more fall back to ``np.sort`` along the axis.
NETWORK_MAX = 8
#: A window needs at least this many seasonal periods for the medians to mean anything.
MIN_PERIODS = 3


def seasonal_clean(
    windows: ArrayLike, *, k: float, period: int, rel_floor: float = 0.05
) -> NDArray[np.float64]:
    """Replace past outliers in each window by the median of their time of day.

    Parameters
    ----------
    windows
        ``(n, W)`` counts, oldest first; NaN = missing.  The last column is the scored point.
    k
        How many robust standard deviations (1.4826 · MAD over the window's days) a past
        point may lie from its time-of-day median before it is replaced.
    period
        Steps per season (24 for hourly data with a daily cycle).  Windows shorter than
        ``MIN_PERIODS`` periods are returned unchanged.
    rel_floor
        The spread never counts as less than ``rel_floor · |median| + 1`` (a MAD of 0 on
        flat data must not turn ordinary noise into outliers).

    Returns
    -------
    ndarray
        A cleaned copy, float64, same shape.

    Examples
    --------
    >>> day = [10.0, 20.0, 30.0, 20.0]
    >>> w = np.array([day * 3 + [10.0, 90.0, 30.0, 99.0]])  # a spike at step 13, scored 99
    >>> seasonal_clean(w, k=3, period=4)[0, -4:].tolist()
    [10.0, 20.0, 30.0, 99.0]
    """
    arr = np.array(windows, dtype=np.float64, ndmin=2)
    n, width = arr.shape
    days = -(-width // period)
    if days < MIN_PERIODS or n == 0:
        return arr
    pad = days * period - width
    grid = np.concatenate([np.full((n, pad), np.nan), arr], axis=1).reshape(n, days, period)
    reference = grid.copy()
    reference[:, -1, -1] = np.nan  # the scored point never informs its own reference
    median = nanmedian_axis1(reference)
    mad = nanmedian_axis1(np.abs(reference - median[:, None, :]))
    spread = np.maximum(MAD_TO_SIGMA * mad, rel_floor * np.abs(median) + 1.0)
    outlier = np.abs(grid - median[:, None, :]) > k * spread[:, None, :]
    outlier &= np.isfinite(median)[:, None, :]
    outlier[:, -1, -1] = False
    cleaned = np.where(outlier, median[:, None, :], grid)
    return np.ascontiguousarray(cleaned.reshape(n, days * period)[:, pad:])


def seasonal_profile(windows: ArrayLike, *, period: int) -> NDArray[np.float64]:
    """Each window's typical value at every step's time of day, from its past steps only.

    The profile at a step is the median of the window's past values (every step but the
    scored last one) at the same time of day; where a time of day has no present past
    value, or the window is shorter than two periods, it is the median of all the
    window's past values (0 when there is none).  FCVAE uses it as the reference of the
    hours whose same-hour-of-week reference is missing altogether; the scored value never
    informs its own profile, so an anomaly there stays whole.

    Parameters
    ----------
    windows
        ``(n, W)`` values (any units), oldest first; NaN = missing.
    period
        Steps per day (24 for hourly data).

    Returns
    -------
    ndarray
        ``(n, W)`` float64, never NaN.

    Examples
    --------
    >>> day = [1.0, 5.0, 3.0]
    >>> seasonal_profile([day * 3 + [1.0, 5.0, 99.0]], period=3)[0, -3:].tolist()
    [1.0, 5.0, 3.0]
    """
    arr = np.array(windows, dtype=np.float64, ndmin=2)
    n, width = arr.shape
    past = arr.copy()
    past[:, -1] = np.nan
    level = np.nan_to_num(nanmedian_axis1(past[:, :, None])[:, 0], nan=0.0)
    days = -(-width // period)
    if days < 2 or n == 0:
        return np.repeat(level[:, None], width, axis=1)
    pad = days * period - width
    grid = np.concatenate([np.full((n, pad), np.nan), past], axis=1).reshape(n, days, period)
    median = nanmedian_axis1(grid)  # (n, period)
    median = np.where(np.isfinite(median), median, level[:, None])
    profile = np.tile(median, (1, days))[:, pad:]
    return np.ascontiguousarray(profile)


def lagged_median(
    values: ArrayLike, *, lag: int, count: int, last: int | None = None
) -> NDArray[np.float64]:
    """At every step, the median of the values ``lag``, ``2·lag`` … ``count·lag`` steps
    earlier (the same hour of the week, with ``lag`` one week of steps).

    Works along the last axis of a series ``(T,)`` or of windows ``(n, T)``; missing values
    and steps before the start are left out of the median, which is NaN where none is
    left.  Only earlier steps are used, so a value never informs its own reference.  With
    ``last``, only the last ``last`` steps get a median (the result's last axis has that
    length): the same values, without the work for the rest.

    Examples
    --------
    >>> lagged_median([1.0, 2.0, 3.0, 5.0, 8.0, 99.0], lag=2, count=2).tolist()
    [nan, nan, 1.0, 2.0, 2.0, 3.5]
    >>> lagged_median([1.0, 2.0, 3.0, 5.0, 8.0, 99.0], lag=2, count=2, last=2).tolist()
    [2.0, 3.5]
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    width = arr.shape[-1]
    size = width if last is None else min(last, width)
    start = width - size  # first step that gets a median
    planes = []
    for k in range(1, count + 1):
        first = max(start - k * lag, 0)  # earliest source step that exists
        if start - k * lag >= 0:  # the whole plane exists: a view, no copy
            planes.append(arr[..., start - k * lag : width - k * lag])
            continue
        plane = np.full((*arr.shape[:-1], size), np.nan)
        if first < width - k * lag:
            plane[..., first + k * lag - start :] = arr[..., first : width - k * lag]
        planes.append(plane)
    return nanmedian_planes(planes)


def nanmedian_axis1(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """``np.nanmedian(values, axis=1)`` for ``(n, d, p)`` arrays, NaN where a slice is all
    NaN, without warnings, and several times faster for the few weeks or days of a window
    (see ``nanmedian_planes``).

    Examples
    --------
    >>> x = np.array([[[1.0, 5.0], [np.nan, 2.0], [3.0, np.nan]]])
    >>> nanmedian_axis1(x).tolist()
    [[2.0, 3.5]]
    """
    return nanmedian_planes([values[:, k, :] for k in range(values.shape[1])])


def nanmedian_planes(planes: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    """The element-wise NaN-median of equally shaped arrays (NaN where all are NaN).

    The values at each position are ordered with NaN last (as +inf: inputs are finite or
    NaN) by an odd-even transposition network of ``np.minimum``/``np.maximum``, each step
    on whole contiguous arrays; the median is the mean of the middle one or two present
    values: the same arithmetic on the same values as ``np.nanmedian``.  The network does
    ``len(planes)²/2`` steps; beyond ``NETWORK_MAX`` arrays they are stacked and sorted.

    Examples
    --------
    >>> nanmedian_planes([np.array([1.0, np.nan]), np.array([4.0, np.nan]), np.array([2.0, 7.0])])
    array([2., 7.])
    """
    d = len(planes)
    if d > NETWORK_MAX:
        return _sorted_nanmedian(np.stack(planes))
    missing = [np.isnan(p) for p in planes]
    gaps = [bool(m.any()) for m in missing]
    count = np.full(planes[0].shape, d, dtype=np.int16)
    ordered = list(planes)
    for k in (i for i, gap in enumerate(gaps) if gap):
        count -= missing[k].astype(np.int16)
        ordered[k] = np.where(missing[k], np.inf, planes[k])
    for rnd in range(d):
        for k in range(rnd % 2, d - 1, 2):
            a, b = ordered[k], ordered[k + 1]
            ordered[k], ordered[k + 1] = np.minimum(a, b), np.maximum(a, b)
    median = (ordered[(d - 1) // 2] + ordered[d // 2]) / 2.0  # every value present
    if not any(gaps):
        return median
    for c in range(d - 1, -1, -1):
        where = count == c
        if where.any():
            fill = (ordered[(c - 1) // 2] + ordered[c // 2]) / 2.0 if c else np.nan
            median = np.where(where, fill, median)
    return median


def _sorted_nanmedian(stacked: NDArray[np.float64]) -> NDArray[np.float64]:
    """``nanmedian_planes`` of many arrays stacked on axis 0, by ``np.sort``."""
    d = stacked.shape[0]
    present = ~np.isnan(stacked)
    n_present = present.sum(axis=0)
    ordered = np.sort(np.where(present, stacked, np.inf), axis=0)
    low = np.take_along_axis(ordered, np.clip((n_present[None] - 1) // 2, 0, d - 1), axis=0)
    high = np.take_along_axis(ordered, np.clip(n_present[None] // 2, 0, d - 1), axis=0)
    median: NDArray[np.float64] = np.where(n_present > 0, ((low + high) / 2.0)[0], np.nan)
    return median
