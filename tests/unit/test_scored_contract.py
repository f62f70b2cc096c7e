"""The scored topic carries exactly the ``ScoredHour`` contract: every record the scorer
makes validates against it and goes out through ``contracts.scored_hour_json``."""

from __future__ import annotations

import json

import pytest

from app import PROJECT_ROOT
from app.contracts import ScoredHour, scored_hour_json
from app.data import load_counts
from app.registry import ModelRegistry
from app.scoring import score_frame
from app.streaming.scorer import emissions_to_messages


def test_every_scored_record_is_the_contract_and_its_wire_form_round_trips() -> None:
    frame = load_counts(PROJECT_ROOT / "data" / "synthetic_transactions.csv")
    frame = frame[frame["combo"] == "Star_CMP"].iloc[-(840 + 30) :]
    registry = ModelRegistry(PROJECT_ROOT / "models", detector="ensemble")
    records = score_frame(frame, registry, window=registry.window(), max_gap_steps=24)
    records = records.drop(columns=["timestamp"]).to_dict("records")
    statuses = {r["status"] for r in records}
    assert "scored" in statuses and "warming_up" in statuses
    for record in records:
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()}
        wire = scored_hour_json(clean)
        assert ScoredHour.model_validate_json(wire) == ScoredHour.model_validate(clean)
        assert list(json.loads(wire)) == [f for f in ScoredHour.model_fields if f in clean]


def test_a_field_outside_the_contract_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\['secret'\] are not in the ScoredHour contract"):
        scored_hour_json(
            {"combo": "A", "hour": "2025-01-01T00:00:00Z", "status": "missing", "secret": 1}
        )


def test_the_job_writes_scored_hours_through_the_contract() -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "combo": ["A"],
            "step": [480_000],
            "status": ["missing"],
            "count": [None],
            "window_values": [None],
        }
    )
    out = emissions_to_messages(
        frame,
        model_path=str(PROJECT_ROOT / "models"),
        detector="fcvae",
        n_samples=None,
        torch_threads=1,
        scored_topic="s",
        deadletter_topic="d",
        source_topic="i",
    )
    (value,) = out["value"]
    assert list(json.loads(value))[:3] == ["combo", "hour", "status"]
