"""Merge calibrated FCVAE and VAE+GAN scores into one ensemble score.

Both inputs are on the calibrated scale (−log10 of the clean-validation tail
probability), so they are comparable; the ensemble is

- ``mode="weighted"``: ``w·fcvae + (1 − w)·vaegan`` (``w = weight_fcvae``), or
- ``mode="max"``: ``max(fcvae, vaegan)`` (an alarm from either detector).

The mode, the weight and the threshold are chosen on validation (``app.pipeline``) and
kept in ``models/ensemble.json``.  Higher = more anomalous.  A NaN in either input gives
the other one (a detector that cannot score does not silence the other).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

MODES = ("weighted", "max")


def combine_calibrated(
    fcvae: ArrayLike, vaegan: ArrayLike, settings: Mapping[str, Any]
) -> NDArray[np.float64]:
    """Ensemble score from two calibrated score arrays.

    Examples
    --------
    >>> combine_calibrated([1.0, 4.0], [3.0, 0.0], {"mode": "weighted", "weight_fcvae": 0.5})
    array([2., 2.])
    >>> combine_calibrated([1.0, 4.0], [3.0, float("nan")], {"mode": "max"})
    array([3., 4.])
    """
    f = np.asarray(fcvae, dtype=np.float64)
    v = np.asarray(vaegan, dtype=np.float64)
    if f.shape != v.shape:
        raise ValueError(f"score arrays differ in shape: {f.shape} vs {v.shape}")
    mode = settings.get("mode", "weighted")
    if mode == "weighted":
        w = float(settings.get("weight_fcvae", 0.5))
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"weight_fcvae must lie in [0, 1], got {w}")
        out = w * f + (1.0 - w) * v
    elif mode == "max":
        out = np.fmax(f, v)
    else:
        raise ValueError(f"unknown ensemble mode {mode!r}; choose one of {MODES}")
    return np.where(np.isnan(f), v, np.where(np.isnan(v), f, out))


def candidate_settings(
    weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> list[dict[str, Any]]:
    """The grid searched on validation: every weight of the weighted mode, and max.

    Examples
    --------
    >>> len(candidate_settings())
    6
    """
    grid: list[dict[str, Any]] = [{"mode": "weighted", "weight_fcvae": w} for w in weights]
    grid.append({"mode": "max"})
    return grid
