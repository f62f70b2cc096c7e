"""The live pipeline on real parts: producer → Kafka → Spark job → scored topic.

The stream's records must equal the batch scorer's (``app.scoring.score_frame``, what
``python -m app.score`` runs) on the same data: every hour exactly once, identical
status, scores and flags.  Malformed messages go to the dead-letter topic with a reason
while the hours around them are scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.config import KafkaSettings, StreamSettings
from app.data import load_counts
from app.kafka_io import create_topic_set
from app.registry import ModelRegistry
from app.scoring import score_frame
from producer.producer import ProducerSettings
from tests.reliability.helpers import read_all, replay, run_job_available_now, send

pytestmark = pytest.mark.integration

COMBOS = ["Accel_CMP", "Star_nopin"]
HOURS = 60  # per combo: 24 warm-up + 36 of the test split


@pytest.fixture
def topics(kafka_settings: KafkaSettings, topic_name: str) -> KafkaSettings:
    return create_topic_set(kafka_settings, topic_name, 3)


def test_stream_equals_batch_scorer_and_dead_letters_bad_input(
    spark, topics: KafkaSettings, tiny_models: Path, tmp_path: Path
) -> None:
    from app.streaming.job import build_query

    # 1. The real producer sends the split (with its warm-up prefix) for two combos.
    sent = sum(replay(topics, combo, HOURS, warmup=24) for combo in COMBOS)
    assert sent > 0
    # 2. Malformed and out-of-contract messages in between.
    bad = [
        (b"Accel_CMP", b"{not json"),
        (
            b"Accel_CMP",
            json.dumps(
                {"combo": "Accel_CMP", "hour": "2025-05-12T03:00:00Z", "count": -5}
            ).encode(),
        ),
        (
            b"Nope",
            json.dumps({"combo": "Nope", "hour": "2025-05-12T03:00:00Z", "count": 5}).encode(),
        ),
        (
            b"Star_nopin",
            json.dumps(
                {"combo": "Star_nopin", "hour": "2025-05-12T03:30:00Z", "count": 5}
            ).encode(),
        ),
        (b"Star_nopin", b"\xff\xfe\x00garbage"),
    ]
    send(topics, topics.kafka_input_topic, bad)

    # 3. The job, as the entry point builds it, run until the topic is drained.
    registry = ModelRegistry(tiny_models, detector="fcvae")
    known = registry.check()
    settings = StreamSettings(
        model_path=tiny_models,
        detector="fcvae",
        trigger_available_now=True,
        window_size=registry.window(),
    )
    query = build_query(spark, topics, settings, str(tmp_path / "checkpoint"), known)
    query.awaitTermination(timeout=300)
    assert query.exception() is None

    stream = pd.DataFrame(read_all(topics, topics.kafka_scored_topic))
    dead = read_all(topics, topics.kafka_deadletter_topic)

    # Every hour exactly once.
    assert not stream.duplicated(["combo", "hour"]).any()
    assert len(stream) == sent
    # Dead letters: one per bad message, each with a specific reason.
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == len(bad), reasons
    assert any(r.startswith("malformed JSON") for r in reasons)
    assert any(r.startswith("negative count") for r in reasons)
    assert any(r.startswith('unknown combo "Nope"') for r in reasons)
    assert any(r.startswith("hour not aligned") for r in reasons)
    assert any(r.startswith("value is not valid UTF-8") for r in reasons)
    assert all(d["source_topic"] == topics.kafka_input_topic for d in dead)

    # 4. The batch scorer on the same hours gives the same records, digit for digit.
    assert_equals_batch_scorer(stream, registry, settings, min_scored=50)
    assert (stream.loc[stream["status"] == "scored", "threshold"].notna()).all()
    assert set(stream["status"]) <= {"scored", "warming_up", "missing"}


def assert_equals_batch_scorer(
    stream: pd.DataFrame,
    registry: ModelRegistry,
    settings: StreamSettings,
    min_scored: int,
    data_path: Path | None = None,
) -> None:
    """The stream's records equal ``score_frame``'s on the same hours, digit for digit."""
    frame = load_counts(data_path or ProducerSettings().data_path, freq="auto")
    step = settings.resolved_step_seconds()
    stream = stream.assign(timestamp=pd.to_datetime(stream["hour"], utc=True))
    first, last = stream["timestamp"].min(), stream["timestamp"].max()
    combos = sorted(stream["combo"].unique())
    frame = frame[frame["combo"].isin(combos) & frame["timestamp"].between(first, last)]
    batch = score_frame(
        frame,
        registry,
        window=settings.window_size,
        max_gap_steps=settings.max_gap_steps(),
        step_seconds=step,
    )
    batch = batch[batch["timestamp"] >= first]
    merged = stream.merge(
        batch, on=["combo", "hour"], suffixes=("_s", "_b"), how="outer", indicator=True
    )
    assert (merged["_merge"] == "both").all()
    assert (merged["status_s"] == merged["status_b"]).all()
    scored = merged[merged["status_s"] == "scored"]
    assert len(scored) > min_scored
    for column in ("score", "fcvae_score", "expected"):
        np.testing.assert_array_equal(
            scored[f"{column}_s"].to_numpy(float), scored[f"{column}_b"].to_numpy(float)
        )
    assert (scored["is_anomaly_s"] == scored["is_anomaly_b"]).all()


def test_stream_equals_batch_with_a_same_hour_of_week_reference(
    spark, topics: KafkaSettings, tmp_path: Path
) -> None:
    """A model whose windows hold reference weeks (the shipped kind, here 1 week + 24 h):
    the stream keeps the longer state, and its scores still equal the batch scorer's."""
    from app.train import main as train_main

    models = tmp_path / "models"
    code = train_main(
        [
            *("--detector", "fcvae", "--tiny", "--reference-weeks", "1", "--epochs", "2"),
            *("--combos", "Accel_CMP", "--no-progress", "--output-dir", str(models)),
        ]
    )
    assert code == 0
    registry = ModelRegistry(models, detector="fcvae")
    assert registry.window() == 24 + 168
    sent = replay(topics, "Accel_CMP", registry.window() + 40, warmup=registry.window())
    run_job_available_now(spark, topics, models, tmp_path / "checkpoint")
    stream = pd.DataFrame(read_all(topics, topics.kafka_scored_topic))
    assert not stream.duplicated(["combo", "hour"]).any()
    assert len(stream[stream["status"] != "missing"]) == sent
    settings = StreamSettings(model_path=models, detector="fcvae", window_size=registry.window())
    assert_equals_batch_scorer(stream, registry, settings, min_scored=30)


def test_long_replay_with_gaps_and_no_bad_input(
    spark, topics: KafkaSettings, tiny_models: Path, tmp_path: Path
) -> None:
    """One big micro-batch of one combo whose span holds unlabelled gaps, no rejected record:
    what `make run`'s first batch looks like (it once failed in the Arrow conversion while
    every smaller test passed)."""
    hours = 300
    sent = replay(topics, "Accel_CMP", hours, warmup=24)
    run_job_available_now(spark, topics, tiny_models, tmp_path / "checkpoint")
    stream = pd.DataFrame(read_all(topics, topics.kafka_scored_topic))
    assert not stream.duplicated(["combo", "hour"]).any()
    missing = stream[stream["status"] == "missing"]
    assert len(missing) >= 1  # the demo data has gaps in this span
    assert len(stream) == sent + len(missing)
    assert read_all(topics, topics.kafka_deadletter_topic) == []


def test_a_5_minute_series_streams_every_step_as_app_score_does(
    spark, topics: KafkaSettings, tmp_path: Path
) -> None:
    """A user's 5-minute CSV: trained by the CLI (step inferred), streamed by the real
    producer and job (the step read from the models): every step after warm-up is scored,
    once, and the stream equals the batch scorer digit for digit."""
    from app.train import main as train_main

    rng = np.random.default_rng(5)
    stamps = pd.date_range("2025-03-03", periods=3 * 288, freq="5min", tz="UTC")
    counts = rng.poisson(40 + 20 * np.sin(2 * np.pi * np.arange(stamps.size) / 288))
    split = np.where(np.arange(stamps.size) < 2 * 288, "train", "test")
    split[int(1.6 * 288) : 2 * 288] = "val"
    csv = tmp_path / "five_minute.csv"
    pd.DataFrame(
        {
            "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "combo": "pos_1",
            "count": counts,
            "split": split,
        }
    ).to_csv(csv, index=False)
    models = tmp_path / "models"
    code = train_main(
        [
            *("--detector", "fcvae", "--tiny", "--epochs", "2", "--no-progress"),
            *("--data-path", str(csv), "--output-dir", str(models)),
        ]
    )
    assert code == 0
    registry = ModelRegistry(models, detector="fcvae")
    assert registry.step_seconds() == 300
    window = registry.window()
    sent = replay(topics, "pos_1", window + 200, warmup=window, data_path=csv, freq="auto")
    assert sent == 200 + window
    run_job_available_now(spark, topics, models, tmp_path / "checkpoint")
    stream = pd.DataFrame(read_all(topics, topics.kafka_scored_topic))
    assert not stream.duplicated(["combo", "hour"]).any()
    assert len(stream) == sent  # nothing dropped: no step collapsed into its clock hour
    assert (stream["status"] == "scored").sum() == sent - (window - 1)
    stamps_sent = pd.to_datetime(stream["hour"], utc=True).sort_values()
    assert stamps_sent.diff().dropna().min() == pd.Timedelta("5min")
    settings = StreamSettings(
        model_path=models, detector="fcvae", window_size=window, step_seconds=300
    )
    assert_equals_batch_scorer(stream, registry, settings, min_scored=150, data_path=csv)
