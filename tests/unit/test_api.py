"""The notebook API on the shipped models and on a tiny freshly trained one."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.api import AnomalyDetectionSystem


def test_execute_on_shipped_models_returns_every_detector() -> None:
    system = AnomalyDetectionSystem({"combos": ["Star_nopin"]}).setup()
    results = system.execute()
    assert {"fcvae", "vaegan", "ensemble", "seasonal_baseline"} <= set(results)
    overall = results["ensemble"]["overall"]
    # The shipped models' numbers on this combo (TECHNICAL.md, "Evaluation"): 7 of 7 events
    # caught, 4 false-alarm runs.
    assert overall["event"]["recall"] == pytest.approx(1.0)
    assert overall["event"]["precision"] == pytest.approx(7 / 11)
    assert overall["event"]["f1"] == pytest.approx(0.778, abs=1e-3)
    assert system.scores is not None and len(system.scores) > 600


def test_setup_can_train_tiny_models(tmp_path: Path) -> None:
    config = {
        "train": True,
        "tiny": True,
        "epochs": 2,
        "detectors": ["fcvae"],
        "decision": "fcvae",
        "combos": ["Accel_nopin"],
        "model_dir": tmp_path,
    }
    results = AnomalyDetectionSystem(config).setup().execute()
    assert (tmp_path / "fcvae" / "Accel_nopin" / "meta.json").exists()
    assert set(results) >= {"fcvae", "seasonal_baseline"}


def test_unknown_config_key_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown config keys"):
        AnomalyDetectionSystem({"modle_dir": "x"})


def test_execute_before_setup_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="setup"):
        AnomalyDetectionSystem().execute()
