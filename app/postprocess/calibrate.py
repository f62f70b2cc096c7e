"""Score calibration: raw detector score → a common, interpretable scale.

Choice of scale
---------------
Raw scores of different detectors (FCVAE reconstruction probability, VAE+GAN critic mix,
seasonal robust z) live in unrelated units. :class:`EmpiricalCalibrator` maps a raw score ``s``
to its **surprise in decades**::

    calibrated(s) = -log10 P_clean(S >= s)

estimated on *clean* validation scores (no anomalies, or with labelled ones removed). A
calibrated 2 means "one clean hour in a hundred scores this high", 3 one in a thousand,
whatever the detector, so calibrated scores can be thresholded with one number and combined.

How it is estimated
-------------------
* **Body** — quantile anchors: for tail levels ``y = 0, 0.25, 0.5, …`` decades, the anchor is
  the empirical ``1 - 10**-y`` quantile of the clean scores; between anchors the map is linear
  (the anchors are kept as plain lists, as in Merlion's calibrator). Anchors stop where fewer
  than ``min_tail_count`` clean scores lie beyond them, so every anchor is backed by data.
* **Tail** — beyond the last anchor the tail is modelled as exponential
  (peaks-over-threshold with shape 0): ``P(S >= s) ≈ p_last · exp(-(s - s_last) / beta)``, with
  ``beta`` the mean excess over the top 10 % of clean scores (``tail_fit_decades``). On the
  log scale that is a straight line of slope ``1 / (beta · ln 10)``, so large scores keep
  growing (they are not clipped at the largest clean score) and stay finite for finite input.
* Below the smallest clean score the map is 0. The map is monotone non-decreasing; NaN stays
  NaN.

The state is plain floats and lists (:meth:`EmpiricalCalibrator.to_dict`), written verbatim
into ``meta.json``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.errors import ArtifactError, DataError, NotFittedError

logger = logging.getLogger(__name__)

_KIND = "empirical_tail_log10"
_STATE_VERSION = 1
_FMAX = float(np.finfo(np.float64).max)


class EmpiricalCalibrator:
    """Monotone map from raw scores to ``-log10`` clean-tail probability (higher = more anomalous).

    Parameters
    ----------
    step_decades
        Spacing of the quantile anchors on the ``-log10`` tail scale.
    min_tail_count
        An anchor at tail level ``p`` is used only if at least this many clean scores are
        expected beyond it (``n · p >= min_tail_count``); also the minimum exceedance count
        for estimating the exponential tail scale.
    min_samples
        Fewest finite clean scores accepted by :meth:`fit`.
    tail_fit_decades
        The exponential tail scale is the mean excess of the clean scores over their
        ``1 - 10**-tail_fit_decades`` quantile (default 1: the top 10 %), or over the last
        anchor when that is lower.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cal = EmpiricalCalibrator().fit(rng.exponential(1.0, 5000))
    >>> cal.transform([-1.0, 0.0, np.log(10), np.log(100)]).round(1).tolist()
    [0.0, 0.0, 1.0, 2.0]
    >>> bool(19.0 < cal.transform([50.0])[0] < 24.0)  # far tail, extrapolated; exact 21.7
    True
    >>> restored = EmpiricalCalibrator.from_dict(cal.to_dict())
    >>> bool(np.allclose(restored.transform([3.0]), cal.transform([3.0])))
    True
    """

    def __init__(
        self,
        *,
        step_decades: float = 0.25,
        min_tail_count: int = 10,
        min_samples: int = 20,
        tail_fit_decades: float = 1.0,
    ) -> None:
        if not step_decades > 0:
            raise DataError(f"step_decades must be > 0, got {step_decades!r}")
        if min_tail_count < 1:
            raise DataError(f"min_tail_count must be >= 1, got {min_tail_count!r}")
        if min_samples < 2:
            raise DataError(f"min_samples must be >= 2, got {min_samples!r}")
        if not tail_fit_decades > 0:
            raise DataError(f"tail_fit_decades must be > 0, got {tail_fit_decades!r}")
        self.step_decades = float(step_decades)
        self.tail_fit_decades = float(tail_fit_decades)
        self.min_tail_count = int(min_tail_count)
        self.min_samples = int(min_samples)
        self.anchors_score_: list[float] | None = None
        self.anchors_calibrated_: list[float] | None = None
        self.tail_scale_: float | None = None
        self.n_fit_: int | None = None

    # ------------------------------------------------------------------ fitting

    def fit(self, clean_scores: ArrayLike) -> EmpiricalCalibrator:
        """Estimate the map from clean (anomaly-free) validation scores; NaN/inf are ignored.

        Raises
        ------
        DataError
            Fewer than ``min_samples`` finite scores.
        """
        raw = np.asarray(clean_scores, dtype=np.float64).ravel()
        s = np.sort(raw[np.isfinite(raw)])
        n = int(s.size)
        if n < self.min_samples:
            raise DataError(
                f"calibration needs at least {self.min_samples} finite clean scores, got {n}"
            )
        top = max(math.log10(n / self.min_tail_count), 0.0)
        levels = np.arange(0.0, top + 1e-9, self.step_decades)
        quantiles = np.quantile(s, 1.0 - 10.0**-levels)
        quantiles = np.maximum.accumulate(quantiles)  # guard against float round-off
        # Tied anchors (many equal scores): keep the lowest level, i.e. a tie is not surprising.
        xs, first = np.unique(quantiles, return_index=True)
        ys = levels[first]
        # Exponential tail scale: mean excess over a threshold low enough to hold many points
        # (the tail_fit_decades level, or the last anchor if that is lower).
        u = float(np.quantile(s, 1.0 - 10.0 ** -min(self.tail_fit_decades, float(ys[-1]))))
        excess = s[s > u] - u
        if excess.size >= 2 and excess.mean() > 0:
            beta = float(excess.mean())
        elif xs.size >= 2:
            beta = float((xs[-1] - xs[-2]) / ((ys[-1] - ys[-2]) * math.log(10)))
        else:
            beta = 1e-6 * max(1.0, abs(float(xs[-1])))
            logger.warning("clean scores are constant (%r): tail scale set to %g", xs[-1], beta)
        self.anchors_score_ = [float(x) for x in xs]
        self.anchors_calibrated_ = [float(y) for y in ys]
        self.tail_scale_ = beta
        self.n_fit_ = n
        logger.debug(
            "calibrator fitted on %d scores: %d anchors up to %.2f decades, tail scale %g",
            n,
            len(xs),
            ys[-1],
            beta,
        )
        return self

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` or :meth:`from_dict` set the state."""
        return self.anchors_score_ is not None

    # ------------------------------------------------------------------ mapping

    def transform(self, scores: ArrayLike) -> NDArray[np.float64]:
        """Calibrated scores (``-log10`` clean-tail probability, ≥ 0); NaN stays NaN."""
        if self.anchors_score_ is None or self.anchors_calibrated_ is None:
            raise NotFittedError("EmpiricalCalibrator.transform called before fit/from_dict")
        assert self.tail_scale_ is not None
        x = np.asarray(scores, dtype=np.float64)
        xs = np.asarray(self.anchors_score_)
        ys = np.asarray(self.anchors_calibrated_)
        out = np.interp(x, xs, ys, left=0.0, right=ys[-1])
        beyond = x > xs[-1]
        if np.any(beyond):
            with np.errstate(over="ignore"):
                slope = 1.0 / (self.tail_scale_ * math.log(10))
                extra = (x[beyond] - xs[-1]) * slope
            out[beyond] = ys[-1] + np.minimum(extra, _FMAX - ys[-1])
        out = np.where(np.isnan(x), np.nan, out)
        return np.asarray(out, dtype=np.float64)

    __call__ = transform

    def tail_probability(self, scores: ArrayLike) -> NDArray[np.float64]:
        """Estimated clean-data probability of a score at least this high (``10**-calibrated``)."""
        return np.asarray(10.0 ** -self.transform(scores), dtype=np.float64)

    # ------------------------------------------------------------------ state

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (plain floats, ints and lists)."""
        if not self.is_fitted:
            raise NotFittedError("EmpiricalCalibrator.to_dict called before fit")
        return {
            "kind": _KIND,
            "version": _STATE_VERSION,
            "step_decades": self.step_decades,
            "min_tail_count": self.min_tail_count,
            "min_samples": self.min_samples,
            "tail_fit_decades": self.tail_fit_decades,
            "anchors_score": list(self.anchors_score_ or []),
            "anchors_calibrated": list(self.anchors_calibrated_ or []),
            "tail_scale": self.tail_scale_,
            "n_fit": self.n_fit_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> EmpiricalCalibrator:
        """Rebuild a fitted calibrator from :meth:`to_dict` output.

        Raises
        ------
        ArtifactError
            Wrong kind or version, or anchors that are not a valid monotone map.
        """
        if not isinstance(state, dict):
            raise ArtifactError(f"calibrator state must be a dict, got {type(state).__name__}")
        if state.get("kind") != _KIND or state.get("version") != _STATE_VERSION:
            raise ArtifactError(
                f"calibrator state kind/version {state.get('kind')!r}/{state.get('version')!r} "
                f"is not {_KIND!r}/{_STATE_VERSION}"
            )
        try:
            cal = cls(
                step_decades=float(state["step_decades"]),
                min_tail_count=int(state["min_tail_count"]),
                min_samples=int(state["min_samples"]),
                tail_fit_decades=float(state["tail_fit_decades"]),
            )
            xs = [float(v) for v in state["anchors_score"]]
            ys = [float(v) for v in state["anchors_calibrated"]]
            beta = float(state["tail_scale"])
            n_fit = int(state["n_fit"])
        except (KeyError, TypeError, ValueError, DataError) as exc:
            raise ArtifactError(f"calibrator state is incomplete or malformed: {exc}") from exc
        ax, ay = np.asarray(xs), np.asarray(ys)
        if (
            ax.size == 0
            or ax.size != ay.size
            or not (np.isfinite(ax).all() and np.isfinite(ay).all())
            or (np.diff(ax) <= 0).any()
            or (np.diff(ay) < 0).any()
            or not (math.isfinite(beta) and beta > 0)
        ):
            raise ArtifactError(
                f"calibrator anchors are not a monotone map: scores={xs[:8]}, "
                f"calibrated={ys[:8]}, tail_scale={beta!r}"
            )
        cal.anchors_score_, cal.anchors_calibrated_ = xs, ys
        cal.tail_scale_, cal.n_fit_ = beta, n_fit
        return cal

    def __repr__(self) -> str:
        state = f"{len(self.anchors_score_)} anchors" if self.anchors_score_ else "unfitted"
        return (
            f"EmpiricalCalibrator(step_decades={self.step_decades}, "
            f"min_tail_count={self.min_tail_count}, min_samples={self.min_samples}, "
            f"tail_fit_decades={self.tail_fit_decades}; {state})"
        )
