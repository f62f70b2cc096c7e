"""The real parts, end to end: kafka-python → Kafka broker → Spark Structured Streaming → sink."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from app.config import KafkaSettings
from app.contracts import HOURLY_COUNT_DDL, HourlyCount
from app.kafka_io import ensure_topics

pytestmark = pytest.mark.integration

COMBOS = ("Accel_CMP", "Accel_nopin", "Star_CMP", "Star_nopin")


def _produce(settings: KafkaSettings, topic: str, records: list[HourlyCount]) -> None:
    producer = KafkaProducer(**settings.client_options(), acks="all", linger_ms=5)
    try:
        for record in records:
            producer.send(topic, key=record.combo.encode(), value=record.to_json_bytes())
        producer.flush(timeout=30)
    finally:
        producer.close()


def _hours(n_per_combo: int) -> list[HourlyCount]:
    start = datetime(2025, 3, 2, tzinfo=UTC)
    return [
        HourlyCount.make(combo, start + timedelta(hours=h), 1000 + 7 * h + i)
        for h in range(n_per_combo)
        for i, combo in enumerate(COMBOS)
    ]


def test_kafka_python_round_trip(kafka_settings: KafkaSettings, topic_name: str) -> None:
    ensure_topics(kafka_settings, [topic_name], partitions=2)
    records = _hours(5)
    _produce(kafka_settings, topic_name, records)
    consumer = KafkaConsumer(
        topic_name,
        **kafka_settings.client_options(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5_000,
    )
    try:
        got = [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()
    assert sorted((g["combo"], g["hour"], g["count"]) for g in got) == sorted(
        (r.combo, r.hour, r.count) for r in records
    )


def test_spark_reads_every_message_exactly_once(
    spark, kafka_settings: KafkaSettings, topic_name: str, tmp_path: Path
) -> None:
    from pyspark.sql import functions as F

    ensure_topics(kafka_settings, [topic_name], partitions=3)
    records = _hours(50)  # 200 messages over 3 partitions
    _produce(kafka_settings, topic_name, records)

    raw = (
        spark.readStream.format("kafka")
        .options(**kafka_settings.spark_options())
        .option("subscribe", topic_name)
        .option("startingOffsets", "earliest")
        .load()
    )
    parsed = raw.select(
        F.col("key").cast("string").alias("key"),
        F.from_json(F.col("value").cast("string"), HOURLY_COUNT_DDL).alias("m"),
        "partition",
        "offset",
    ).select("key", "m.*", "partition", "offset")
    sink = tmp_path / "sink"
    query = (
        parsed.writeStream.format("parquet")
        .option("path", str(sink))
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(timeout=180)
    assert query.exception() is None
    out = spark.read.parquet(str(sink)).toPandas()

    assert len(out) == len(records)
    assert not out.duplicated(["combo", "hour"]).any()
    assert (out["key"] == out["combo"]).all()
    assert sorted(out["partition"].unique().tolist()) == [0, 1, 2]
    expected = {(r.combo, r.hour): r.count for r in records}
    got = {(row.combo, row.hour): int(row.count) for row in out.itertuples()}
    assert got == expected
    assert out["produced_at"].notna().all()

    # A second run from the same checkpoint finds nothing new: no hour is read twice.
    again = (
        parsed.writeStream.format("parquet")
        .option("path", str(sink))
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    again.awaitTermination(timeout=120)
    assert len(spark.read.parquet(str(sink)).toPandas()) == len(records)
