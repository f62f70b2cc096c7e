"""Causal, label-free library baselines for the real-data evaluation (River and PyOD).

Each baseline turns a univariate series on a regular grid (NaN = missing step) into one score
per step, **higher = more anomalous**, NaN where the step is missing or the features are not
yet defined.  Nothing reads labels:

* ``river_hst`` — :class:`river.anomaly.HalfSpaceTrees` over a small lagged/seasonal feature
  vector, strictly online: each step is scored (``score_one``) before it is learnt
  (``learn_one``), so a score only depends on earlier steps and the current value.
* ``pyod_iforest`` / ``pyod_ecod`` — :class:`pyod.models.iforest.IForest` and
  :class:`pyod.models.ecod.ECOD` fitted once on the **train part's** lagged windows only and
  then scoring every window (each window ends at the step it scores, so scores are causal).

Features (:func:`lagged_features`) are robust-normalised with the median and IQR of the train
part (label-free), missing steps are carried forward from the last observed value (causal) for
the features of later steps, and ``day_steps`` adds the same-time-yesterday difference.

The three are meant as *strong, simple* references for the product's detectors; their
thresholds are set by the caller (``app.evaluate_real`` uses the same alarm budget on the
validation part for every baseline).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.errors import ContractError, DataError

logger = logging.getLogger(__name__)

__all__ = [
    "LIBRARY_BASELINES",
    "ECODBaseline",
    "HalfSpaceTreesBaseline",
    "IForestBaseline",
    "lagged_features",
    "robust_scale",
]


def robust_scale(train_values: ArrayLike) -> tuple[float, float]:
    """``(center, scale)`` = median and IQR/1.349 of the finite train values (scale > 0).

    Falls back to the standard deviation, then to 1, when the IQR is 0.

    Examples
    --------
    >>> center, scale = robust_scale([1.0, 2.0, 3.0, 4.0, np.nan])
    >>> center, round(scale, 6)  # IQR 1.5 / 1.349
    (2.5, 1.111935)
    >>> robust_scale([5.0, 5.0, 5.0])
    (5.0, 1.0)
    """
    x = np.asarray(train_values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise DataError("no finite train value to normalise with")
    q25, center, q75 = np.percentile(x, [25, 50, 75])
    scale = (q75 - q25) / 1.349
    if not scale > 0:
        scale = float(np.std(x))
    if not scale > 0:
        scale = 1.0
    return float(center), float(scale)


def _ffill(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Carry the last finite value forward (causal); leading NaNs stay NaN."""
    idx = np.where(np.isfinite(x), np.arange(x.size), -1)
    np.maximum.accumulate(idx, out=idx)
    out = np.full_like(x, np.nan)
    ok = idx >= 0
    out[ok] = x[idx[ok]]
    return out


def _feature_rows(
    values: ArrayLike, train_mask: ArrayLike, window: int, day_steps: int | None
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """``lagged_features``, which rows are complete, and which are in the train part."""
    feats = lagged_features(values, train_mask, window=window, day_steps=day_steps)
    complete = np.asarray(np.isfinite(feats).all(axis=1), dtype=bool)
    return feats, complete, np.asarray(train_mask, dtype=bool)


def lagged_features(
    values: ArrayLike,
    train_mask: ArrayLike,
    *,
    window: int = 8,
    day_steps: int | None = None,
) -> NDArray[np.float64]:
    """Causal feature matrix, one row per step (NaN rows where undefined).

    Columns: the last ``window`` normalised values ``z(t-window+1) … z(t)``, the one-step
    difference ``z(t) - z(t-1)`` and, when ``day_steps`` is given, the seasonal difference
    ``z(t) - z(t-day_steps)``.  ``z = (x - median) / scale`` with the train part's robust
    statistics (:func:`robust_scale`).  Missing steps are carried forward for later rows'
    features; the row of a missing step itself is NaN.

    Examples
    --------
    >>> f = lagged_features([0.0, 1.0, 2.0, np.nan, 4.0], [1, 1, 1, 0, 0], window=2)
    >>> f.shape, np.isnan(f[:2]).all(axis=1).tolist(), bool(np.isnan(f[3]).all())
    ((5, 3), [True, False], True)
    """
    x = np.asarray(values, dtype=np.float64)
    train = np.asarray(train_mask, dtype=bool)
    if x.ndim != 1 or train.shape != x.shape:
        raise ContractError(f"values and train_mask must be 1-D of one length, got {x.shape}")
    if window < 1:
        raise ContractError(f"window must be >= 1, got {window}")
    center, scale = robust_scale(x[train])
    observed = np.isfinite(x)
    z = _ffill((x - center) / scale)
    n = z.size
    lags = [*range(window - 1, -1, -1)]
    cols = []
    for lag in lags:
        col = np.full(n, np.nan)
        col[lag:] = z[: n - lag] if lag else z
        cols.append(col)
    diff = np.full(n, np.nan)
    diff[1:] = z[1:] - z[:-1]
    cols.append(diff)
    if day_steps:
        seasonal = np.full(n, np.nan)
        if day_steps < n:
            seasonal[day_steps:] = z[day_steps:] - z[:-day_steps]
        # Before a day of history the seasonal difference is unknown: 0 (no evidence).
        seasonal[: min(day_steps, n)] = 0.0
        cols.append(seasonal)
    features = np.column_stack(cols)
    features[~observed] = np.nan
    features[np.isnan(features).any(axis=1)] = np.nan
    return features


@dataclass(frozen=True)
class HalfSpaceTreesBaseline:
    """River's Half-Space Trees, online over :func:`lagged_features` (score, then learn).

    The first ``window`` steps of the stream are learnt without a score (HST needs one full
    reference window); the feature limits are the train part's 0.5/99.5 % quantiles,
    widened by a quarter of their range on each side.
    """

    name: ClassVar[str] = "river_hst"

    lag_window: int = 1
    n_trees: int = 10
    height: int = 8
    window_size: int = 250
    seed: int = 42

    def score(
        self, values: ArrayLike, train_mask: ArrayLike, *, day_steps: int | None = None
    ) -> NDArray[np.float64]:
        from river import anomaly

        feats, ok, train = _feature_rows(values, train_mask, self.lag_window, day_steps)
        fit_rows = feats[ok & train] if (ok & train).any() else feats[ok]
        if fit_rows.shape[0] == 0:
            raise DataError("river_hst: no complete feature row")
        lo, hi = np.percentile(fit_rows, [0.5, 99.5], axis=0)
        pad = np.maximum((hi - lo) * 0.25, 1e-6)
        names = [f"f{i}" for i in range(feats.shape[1])]
        limits: dict[Hashable, tuple[float, float]] = {
            k: (float(a), float(b)) for k, a, b in zip(names, lo - pad, hi + pad, strict=True)
        }
        model = anomaly.HalfSpaceTrees(
            n_trees=self.n_trees,
            height=self.height,
            window_size=self.window_size,
            limits=limits,
            seed=self.seed,
        )
        out = np.full(feats.shape[0], np.nan)
        for seen, i in enumerate(np.flatnonzero(ok)):
            row = dict(zip(names, feats[i].tolist(), strict=True))
            if seen >= self.window_size:
                out[i] = model.score_one(row)
            model.learn_one(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "library": "river",
            "model": "anomaly.HalfSpaceTrees",
            "lag_window": self.lag_window,
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "seed": self.seed,
            "protocol": "online: score_one then learn_one at every observed step",
        }


@dataclass(frozen=True)
class _PyODWindowBaseline:
    """A PyOD detector fitted on the train part's lagged windows, scoring every window."""

    name: ClassVar[str] = "pyod"
    model: ClassVar[str] = ""

    lag_window: int = 4
    max_fit_rows: int = 20_000
    seed: int = 42

    def _make(self) -> Any:
        raise NotImplementedError

    def score(
        self, values: ArrayLike, train_mask: ArrayLike, *, day_steps: int | None = None
    ) -> NDArray[np.float64]:
        feats, ok, train = _feature_rows(values, train_mask, self.lag_window, day_steps)
        fit_rows = feats[ok & train]
        if fit_rows.shape[0] < 10:
            raise DataError(f"{self.name}: {fit_rows.shape[0]} complete train windows, need 10")
        if fit_rows.shape[0] > self.max_fit_rows:  # evenly spaced, deterministic
            keep = np.linspace(0, fit_rows.shape[0] - 1, self.max_fit_rows).astype(np.int64)
            fit_rows = fit_rows[keep]
        detector = self._make()
        detector.fit(fit_rows)
        out = np.full(feats.shape[0], np.nan)
        out[ok] = detector.decision_function(feats[ok])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "library": "pyod",
            "model": self.model,
            "lag_window": self.lag_window,
            "max_fit_rows": self.max_fit_rows,
            "seed": self.seed,
            "protocol": "fit on the train part's windows only, then score every window",
        }


@dataclass(frozen=True)
class IForestBaseline(_PyODWindowBaseline):
    """PyOD's Isolation Forest over lagged windows (fitted on train windows only)."""

    name: ClassVar[str] = "pyod_iforest"
    model: ClassVar[str] = "models.iforest.IForest"

    n_estimators: int = 100

    def _make(self) -> Any:
        from pyod.models.iforest import IForest

        return IForest(n_estimators=self.n_estimators, random_state=self.seed, n_jobs=1)


@dataclass(frozen=True)
class ECODBaseline(_PyODWindowBaseline):
    """PyOD's ECOD (empirical-CDF outlier scores) over lagged windows, fitted on train."""

    name: ClassVar[str] = "pyod_ecod"
    model: ClassVar[str] = "models.ecod.ECOD"

    def _make(self) -> Any:
        from pyod.models.ecod import ECOD

        return ECOD()


#: name -> factory of the library baselines ``app.evaluate_real`` runs.
LIBRARY_BASELINES: dict[str, type] = {
    HalfSpaceTreesBaseline.name: HalfSpaceTreesBaseline,
    IForestBaseline.name: IForestBaseline,
    ECODBaseline.name: ECODBaseline,
}
