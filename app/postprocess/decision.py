"""Decisions: the only objects that turn scores into flags.

A ``Decision`` is one detector's post-rule — calibrator, then a threshold on the calibrated
scale, and how both were chosen — as ``meta.json["decision"]`` stores it; an
``EnsembleDecision`` merges the detectors' calibrated scores with the setting chosen on
validation (``ensemble.json``) and thresholds the merged score. Training writes them
(``to_dict``), and the offline scorer, the stream and the evaluation read them back
(``from_dict``) and call ``calibrate``/``flags``; nothing else compares a score with a
threshold. ``to_dict(from_dict(d)) == d``: the stored fields round-trip unchanged.

Examples
--------
>>> d = Decision.from_dict({"threshold_calibrated": 2.0, "calibrator": None})
>>> d.flags(d.calibrate(np.array([1.0, 3.0, np.nan]))).tolist()
[False, True, False]
>>> e = EnsembleDecision.from_dict({"mode": "max", "threshold": 2.5})
>>> e.flags(e.combine({"fcvae": np.array([1.0, 3.0]), "vaegan": np.array([3.0, 0.0])})).tolist()
[True, True]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.evaluation import flags_from_scores
from app.postprocess.calibrate import EmpiricalCalibrator
from app.postprocess.combine import combine_calibrated

#: The rule every detector's decision applies (also written into ``meta.json``).
RULE = (
    "is_anomaly = calibrated score > threshold_calibrated "
    "(calibrated = -log10 P_clean(raw >= score) on clean validation hours)"
)


def _flags(scores: ArrayLike, threshold: float) -> NDArray[np.bool_]:
    """``score > threshold``; NaN (not scored) is never a flag (the one rule, shared with
    evaluation and threshold search: ``app.evaluation.flags_from_scores``)."""
    return flags_from_scores(scores, threshold)


def _operating_point(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recorded expected false alarms at the threshold, on clean validation (or None)."""
    op = state.get("operating_point")
    return dict(op) if op else None


@dataclass(frozen=True)
class Decision:
    """One detector's decision: calibrate the raw score, flag above the threshold."""

    threshold: float
    calibrator: EmpiricalCalibrator | None = None
    #: Everything else ``meta.json`` records about the choice (kept as it was written).
    record: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Decision:
        calibrator = state.get("calibrator")
        return cls(
            threshold=float(state["threshold_calibrated"]),
            calibrator=EmpiricalCalibrator.from_dict(calibrator) if calibrator else None,
            record={k: v for k, v in state.items() if k != "threshold_calibrated"},
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"threshold_calibrated": self.threshold, **self.record}
        if self.calibrator is not None:
            out["calibrator"] = self.calibrator.to_dict()
        return out

    def calibrate(self, raw: ArrayLike) -> NDArray[np.float64]:
        """The calibrated score (the raw score where no calibrator was fitted)."""
        values = np.asarray(raw, dtype=np.float64)
        if self.calibrator is None:
            return values
        return np.asarray(self.calibrator.transform(values), dtype=np.float64)

    def flags(self, calibrated: ArrayLike) -> NDArray[np.bool_]:
        return _flags(calibrated, self.threshold)

    @property
    def operating_point(self) -> dict[str, Any] | None:
        return _operating_point(self.record)


@dataclass(frozen=True)
class EnsembleDecision:
    """The ensemble's decision over the detectors' calibrated scores (one combo)."""

    settings: Mapping[str, Any]

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> EnsembleDecision:
        if "threshold" not in state:
            raise ValueError("an ensemble decision needs a threshold")
        return cls(settings=dict(state))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    @property
    def threshold(self) -> float:
        return float(self.settings["threshold"])

    def combine(self, calibrated: Mapping[str, ArrayLike]) -> NDArray[np.float64]:
        """The merged score of the detectors' calibrated scores (by detector name)."""
        return combine_calibrated(calibrated, self.settings)

    def flags(self, combined: ArrayLike) -> NDArray[np.bool_]:
        return _flags(combined, self.threshold)

    @property
    def operating_point(self) -> dict[str, Any] | None:
        return _operating_point(self.settings)
