"""Anomaly detectors: a shared contract (``base``) and its implementations.

Every detector scores the last hour of a window; higher scores mean more anomalous.
"""

from __future__ import annotations

from app.detectors.base import Detector, FitReport, ScoreDetails, read_artifact, write_artifact

__all__ = ["Detector", "FitReport", "ScoreDetails", "read_artifact", "write_artifact"]
