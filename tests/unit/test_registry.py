"""The model registry and its bundles on the shipped models: each detector's Decision
calibrates, the bundle's decision merges and flags, and a window's score never depends on
what else shares its batch."""

from __future__ import annotations

import numpy as np
import pytest

from app import PROJECT_ROOT
from app.data import load_counts
from app.postprocess.decision import EnsembleDecision
from app.registry import ModelRegistry
from app.timebase import window_seed

MODELS = PROJECT_ROOT / "models"
COMBO = "Accel_CMP"


@pytest.fixture(scope="module")
def windows() -> tuple[np.ndarray, np.ndarray]:
    registry = ModelRegistry(MODELS)
    window = registry.window()
    frame = load_counts(PROJECT_ROOT / "data" / "synthetic_transactions.csv")
    values = frame[frame["combo"] == COMBO]["value"].to_numpy(dtype=np.float64)
    starts = np.arange(0, 40) * 37 + 100
    batch = np.stack([values[s : s + window] for s in starts])
    seeds = np.array([window_seed(COMBO, int(s), 0) for s in starts], dtype=np.int64)
    return batch, seeds


def test_ensemble_bundle_is_its_decisions_applied(windows: tuple[np.ndarray, np.ndarray]) -> None:
    bundle = ModelRegistry(MODELS).bundle(COMBO)
    assert bundle.detector == "ensemble" and set(bundle.models) == {"fcvae", "vaegan"}
    batch, seeds = windows
    out = bundle.score(batch, seeds)
    for name, decision in bundle.decisions.items():
        np.testing.assert_array_equal(
            out[f"{name}_calibrated"], decision.calibrate(out[f"{name}_score"])
        )
    rule = bundle.decision()
    assert isinstance(rule, EnsembleDecision)
    combined = rule.combine({n: out[f"{n}_calibrated"] for n in bundle.models})
    np.testing.assert_array_equal(out["score"], combined)
    np.testing.assert_array_equal(out["is_anomaly"], out["score"] > rule.threshold)
    assert (out["threshold"] == rule.threshold).all()
    spike = out["is_anomaly"] & (batch[:, -1] >= out["expected"])
    assert (out["direction"][spike] == "spike").all()


def test_a_window_scores_the_same_alone_and_in_a_batch(
    windows: tuple[np.ndarray, np.ndarray],
) -> None:
    bundle = ModelRegistry(MODELS).bundle(COMBO)
    batch, seeds = windows
    together = bundle.score(batch, seeds)
    for i in (0, 17, len(batch) - 1):
        alone = bundle.score(batch[i : i + 1], seeds[i : i + 1])
        for key in ("score", "fcvae_score", "vaegan_score", "expected"):
            assert alone[key][0] == together[key][i], (i, key)


def test_one_detector_decides_alone_when_asked(windows: tuple[np.ndarray, np.ndarray]) -> None:
    batch, seeds = windows
    fcvae = ModelRegistry(MODELS, detector="fcvae").bundle(COMBO)
    assert set(fcvae.models) == {"fcvae"} and fcvae.ensemble is None
    out = fcvae.score(batch, seeds)
    np.testing.assert_array_equal(out["score"], out["fcvae_calibrated"])
    assert (out["threshold"] == fcvae.decisions["fcvae"].threshold).all()
    assert "vaegan_score" not in out
