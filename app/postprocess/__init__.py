"""Post-processing of raw detector scores: calibration, thresholds, intervals.

Pure numpy/pandas: never imports torch, pyspark, dash or kafka. Score direction everywhere:
higher = more anomalous; a point is flagged when ``score > threshold``.
"""

from __future__ import annotations

from app.postprocess.calibrate import EmpiricalCalibrator
from app.postprocess.threshold import (
    ThresholdChoice,
    choose_threshold,
    flags_to_intervals,
    inject_anomalies,
    pick_among_ties,
    threshold_for_false_alarm_rate,
)

__all__ = [
    "EmpiricalCalibrator",
    "ThresholdChoice",
    "choose_threshold",
    "flags_to_intervals",
    "inject_anomalies",
    "pick_among_ties",
    "threshold_for_false_alarm_rate",
]
