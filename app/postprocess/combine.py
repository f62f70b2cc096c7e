"""Merge the detectors' calibrated scores into one ensemble score.

Every input is on the calibrated scale (−log10 of the clean-validation tail probability),
so they are comparable; with ``p`` the primary detector's score (``app.catalog.PRIMARY``)
and ``o`` the mean of the others' the ensemble is

- ``mode="weighted"``: ``w·p + (1 − w)·o`` (``w = settings["weight_fcvae"]``, the primary's
  weight; with two detectors that is ``w·fcvae + (1 − w)·vaegan``), or
- ``mode="max"``: the largest of all scores (an alarm from any detector).

The mode, the weight and the threshold are chosen on validation (``app.pipeline``) and
kept in ``models/ensemble.json``.  Higher = more anomalous.  A NaN is left out (a detector
that cannot score does not silence the others); where every input is NaN so is the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.catalog import PRIMARY

MODES = ("weighted", "max")
#: The settings key of the primary detector's weight.
WEIGHT_KEY = f"weight_{PRIMARY}"


def combine_calibrated(
    calibrated: Mapping[str, ArrayLike], settings: Mapping[str, Any]
) -> NDArray[np.float64]:
    """Ensemble score from the detectors' calibrated score arrays (by detector name).

    Examples
    --------
    >>> combine_calibrated({"fcvae": [1.0, 4.0], "vaegan": [3.0, 0.0]},
    ...                    {"mode": "weighted", "weight_fcvae": 0.5})
    array([2., 2.])
    >>> combine_calibrated({"fcvae": [1.0, 4.0], "vaegan": [3.0, float("nan")]}, {"mode": "max"})
    array([3., 4.])
    """
    if PRIMARY not in calibrated:
        raise ValueError(f"the ensemble needs {PRIMARY!r} scores; got {sorted(calibrated)}")
    arrays = {name: np.asarray(v, dtype=np.float64) for name, v in calibrated.items()}
    primary = arrays.pop(PRIMARY)
    shapes = {name: a.shape for name, a in arrays.items() if a.shape != primary.shape}
    if shapes:
        raise ValueError(f"score arrays differ in shape from {PRIMARY}'s {primary.shape}: {shapes}")
    if not arrays:
        return primary.copy()
    others = np.stack(list(arrays.values()))
    mode = settings.get("mode", "weighted")
    if mode == "weighted":
        w = float(settings.get(WEIGHT_KEY, 0.5))
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"{WEIGHT_KEY} must lie in [0, 1], got {w}")
        present = ~np.isnan(others)
        count = present.sum(axis=0)
        total = np.where(present, others, 0.0).sum(axis=0)
        rest = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        out = w * primary + (1.0 - w) * rest
    elif mode == "max":
        rest = np.fmax.reduce(others, axis=0)
        out = np.fmax(primary, rest)
    else:
        raise ValueError(f"unknown ensemble mode {mode!r}; choose one of {MODES}")
    return np.where(np.isnan(primary), rest, np.where(np.isnan(rest), primary, out))


def candidate_settings(
    weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> list[dict[str, Any]]:
    """The grid searched on validation: every weight of the weighted mode, and max.

    Examples
    --------
    >>> len(candidate_settings())
    6
    """
    grid: list[dict[str, Any]] = [{"mode": "weighted", WEIGHT_KEY: w} for w in weights]
    grid.append({"mode": "max"})
    return grid
