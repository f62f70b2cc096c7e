"""``python -m app.evaluate`` on the shipped models and the demo CSV: the files it writes
keep the contract of issue #3 (metrics.json, metrics.md, scores, plots), and the missed
events it names are exactly the events the decision left unflagged."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from app import PROJECT_ROOT
from app.evaluate import main

COMBOS = ["Accel_CMP", "Accel_nopin", "Star_CMP", "Star_nopin"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    argv = ["detailed", "--model-dir", str(PROJECT_ROOT / "models"), "--output-dir", str(out)]
    assert main(argv) == 0
    return out


def test_metrics_json_has_every_detector_combo_and_metric(evaluated: Path) -> None:
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert metrics["_meta"]["thresholds"] == "chosen on validation only"
    for detector in ("fcvae", "seasonal_baseline", "ensemble"):
        assert sorted(metrics[detector]["per_combo"]) == COMBOS
        for result in [*metrics[detector]["per_combo"].values(), metrics[detector]["overall"]]:
            assert set(result["event"]) >= {"precision", "recall", "f1"}
            assert set(result["point"]) >= {"precision", "recall", "f1"}
            assert {"delay_hours_median", "auprc", "missed_events"} <= set(result)
    for png in COMBOS:
        assert (evaluated / f"{png}.png").stat().st_size > 10_000


def test_missed_events_are_the_events_without_a_flag(evaluated: Path) -> None:
    metrics = json.loads((evaluated / "metrics.json").read_text())
    rows = pd.read_csv(evaluated / "test_scores.csv")
    scored = rows[(rows["status"] == "scored") & rows["is_anomaly"].astype(bool)]
    caught = scored.groupby("event_id")["flag"].apply(lambda f: f.astype(bool).any())
    unflagged = sorted(caught.index[~caught])
    named = sorted(m["event_id"] for m in metrics["ensemble"]["overall"]["missed_events"])
    assert named == unflagged
    n_events = metrics["ensemble"]["overall"]["event"]["n_events"]
    assert n_events - metrics["ensemble"]["overall"]["event"]["detected"] == len(named)
    table = (evaluated / "metrics.md").read_text()
    for m in metrics["ensemble"]["overall"]["missed_events"]:
        assert m["peak_score"] <= m["threshold"]
        assert f"| ensemble | {m['combo']} | {m['event_id']} | {m['start_time']} |" in table
