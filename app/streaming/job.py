"""The Spark Structured Streaming job: Kafka hourly counts → per-combo state → scores → Kafka.

The only module that imports pyspark for the pipeline.  Plan of one query::

    Kafka (input topic, read once per micro-batch)
      → validate (explicit schema; every rejected record gets a specific reason)
      → groupBy(combo of a good record, NULL for a rejected one)
        .applyInPandasWithState(advance)                       [Spark state store]
          good records: window state advanced; rejected ones: passed on, no state kept
      → mapInPandas(score_partition)   batched torch calls, models cached
          ├─ scored / warming_up / missing hours ─────────► scored-topic rows
          └─ rejected records, duplicate / late hours ────► dead-letter rows
      → one Kafka sink (each row names its topic), checkpointed

Window state is a flat row (the window as text: array-typed state fields fail in
``applyInPandasWithState``).  The Kafka sink is at-least-once: after a crash the last
micro-batch may be written again, so consumers keep the newest record per
(combo, hour) — the dashboard does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pandas as pd

from app.config import KafkaSettings, SparkSettings, StreamSettings
from app.contracts import HOURLY_COUNT_DDL
from app.errors import InfraError
from app.streaming.state import ComboWindowState, StepCount, advance
from app.timebase import TimeBase

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery
    from pyspark.sql.streaming.state import GroupState

log = logging.getLogger(__name__)

STATE_DDL = "combo STRING, last_step LONG, window_values STRING, run_length LONG"
EMISSION_DDL = (
    "combo STRING, step LONG, status STRING, count DOUBLE, window_values STRING, "
    "produced_at STRING, raw STRING, src_partition INT, src_offset LONG, reason STRING"
)
EMISSION_COLUMNS = [c.split()[0] for c in EMISSION_DDL.split(", ")]
OUTPUT_DDL = "topic STRING, key STRING, value STRING"


def validated(
    raw: DataFrame, settings: StreamSettings, known_combos: list[str] | None
) -> DataFrame:
    """Parse Kafka records and attach ``reason`` (NULL for a good record).

    Columns out: combo, step (epoch hours), count, produced_at, raw, reason,
    src_topic, src_partition, src_offset.
    """
    from pyspark.sql import functions as F

    text = F.col("value").cast("string")
    js = F.from_json(text, HOURLY_COUNT_DDL, {"allowNonNumericNumbers": "true"})
    # The strict JSON functions below (get_json_object, try_parse_json) reject the bare NaN
    # and Infinity values that from_json reads: where the text is not strict JSON, this copy
    # quotes them, so a NaN or infinite count gets its own reason, not "malformed JSON".
    strict = F.when(F.get_json_object(text, "$").isNotNull(), text).otherwise(
        F.regexp_replace(text, r"(:\s*)(NaN|[+-]?Infinity|[+-]INF)(?=\s*[,}])", '$1"$2"')
    )
    as_variant = F.try_parse_json(strict)
    raw_count = F.get_json_object(strict, "$.count")
    hour_ts = F.try_to_timestamp(F.col("m.hour"))
    hour_s = F.unix_seconds(hour_ts)
    step_s = settings.resolved_step_seconds()
    max_future = F.unix_seconds(F.current_timestamp()) + F.lit(settings.max_future_hours * 3600)

    def field_missing(name: str) -> Column:
        return F.get_json_object(strict, f"$.{name}").isNull()

    def not_a_string(name: str) -> Column:
        """The field's JSON value is a number, boolean, array or object (from_json would
        read it as its text)."""
        kind = F.schema_of_variant(F.try_variant_get(as_variant, f"$.{name}", "variant"))
        return F.coalesce(kind != F.lit("STRING"), F.lit(False))

    reason = (
        F.when(
            F.length(F.col("value")) > settings.max_message_bytes,
            F.format_string(
                "oversized message: %d bytes > MAX_MESSAGE_BYTES=%d",
                F.length(F.col("value")),
                F.lit(settings.max_message_bytes),
            ),
        )
        .when(F.col("value").isNull(), F.lit("empty message (no value)"))
        .when(~F.is_valid_utf8(text), F.lit("value is not valid UTF-8"))
        .when(
            F.get_json_object(strict, "$").isNull() | ~F.ltrim(text).startswith("{"),
            F.lit(
                'malformed JSON: expected an object like {"combo": ..., "hour": ..., "count": ...}'
            ),
        )
        .when(field_missing("combo"), F.lit("missing field 'combo'"))
        .when(field_missing("hour"), F.lit("missing field 'hour'"))
        .when(field_missing("count"), F.lit("missing field 'count'"))
        .when(
            F.col("m.combo").isNull() | not_a_string("combo"),
            F.format_string("combo is not a string: %s", F.get_json_object(strict, "$.combo")),
        )
        .when(F.trim(F.col("m.combo")) == "", F.lit("empty combo"))
        .when(F.col("m.count").isNull(), F.format_string("count is not a number: %s", raw_count))
        .when(F.isnan(F.col("m.count")), F.lit("count is NaN"))
        .when(F.col("m.count") < 0, F.format_string("negative count: %s", raw_count))
        .when(  # before the fractional test: floor() of a huge double overflows a long
            F.col("m.count") > settings.max_count,
            F.format_string(
                "count too large: %s > MAX_COUNT=%d", raw_count, F.lit(settings.max_count)
            ),
        )
        .when(
            F.col("m.count") != F.floor(F.col("m.count")),
            F.format_string("fractional count: %s", raw_count),
        )
        .when(
            not_a_string("hour"),
            F.format_string("hour is not a string: %s", F.get_json_object(strict, "$.hour")),
        )
        .when(
            hour_ts.isNull(),
            F.format_string("hour is not an ISO 8601 timestamp: %s", F.col("m.hour")),
        )
        .when(
            hour_s % step_s != 0,
            F.format_string(
                "hour not aligned to the start of a %d-second step: %s",
                F.lit(step_s),
                F.col("m.hour"),
            ),
        )
        .when(
            hour_s < settings.min_hour_epoch_s,
            F.format_string("hour too far in the past: %s", F.col("m.hour")),
        )
        .when(
            hour_s > max_future, F.format_string("hour too far in the future: %s", F.col("m.hour"))
        )
        .when(
            F.col("key").isNotNull() & (F.col("key").cast("string") != F.col("m.combo")),
            F.format_string(
                "message key %s does not match combo %s",
                F.col("key").cast("string"),
                F.col("m.combo"),
            ),
        )
    )
    if known_combos is not None:
        reason = reason.when(
            ~F.col("m.combo").isin(known_combos),
            F.format_string("unknown combo %s: no model for it under MODEL_PATH", F.col("m.combo")),
        )
    return raw.select(
        F.when(F.is_valid_utf8(text), text)
        .otherwise(F.concat(F.lit("base64:"), F.base64(F.col("value"))))
        .alias("raw"),
        js.alias("m"),
        F.col("key"),
        F.col("value"),
        F.col("topic").alias("src_topic"),
        F.col("partition").alias("src_partition"),
        F.col("offset").alias("src_offset"),
    ).select(
        F.col("m.combo").alias("combo"),
        (hour_s / step_s).cast("long").alias("step"),
        F.col("m.count").alias("count"),
        F.col("m.produced_at").alias("produced_at"),
        "raw",
        reason.alias("reason"),
        "src_topic",
        "src_partition",
        "src_offset",
    )


def _make_state_function(settings: StreamSettings) -> Any:
    if settings.window_size is None:
        raise ValueError("StreamSettings.window_size must be resolved before building the query")
    window = settings.window_size
    max_gap = TimeBase(settings.resolved_step_seconds()).hours_to_steps(settings.max_gap_hours)

    def advance_group(
        key: tuple[str], pdfs: Iterator[pd.DataFrame], state: GroupState
    ) -> Iterator[pd.DataFrame]:
        combo = key[0]
        frame = pd.concat(list(pdfs), ignore_index=True)
        if combo is None:  # the rejected records of this batch: no state, straight through
            yield rejected_emissions(frame)
            return
        current = ComboWindowState.from_row(state.get) if state.exists else ComboWindowState(combo)
        rows = [
            StepCount(combo, int(s), float(c), ref=i)
            for i, (s, c) in enumerate(zip(frame["step"], frame["count"], strict=True))
        ]
        new_state, emissions = advance(current, rows, window=window, max_gap_steps=max_gap)
        state.update(new_state.to_row())
        out = []
        for e in emissions:
            src = frame.iloc[e.ref] if e.ref >= 0 else None
            out.append(
                {
                    **e.to_record(),
                    "produced_at": None if src is None else src["produced_at"],
                    "raw": None if src is None else src["raw"],
                    "src_partition": None if src is None else int(src["src_partition"]),
                    "src_offset": None if src is None else int(src["src_offset"]),
                    # Explicit None (an object column): a missing key would be a float NaN
                    # column, which pyarrow turns into a ChunkedArray for a STRING field.
                    "reason": None,
                }
            )
        yield pd.DataFrame(out, columns=EMISSION_COLUMNS)

    return advance_group


def rejected_emissions(frame: pd.DataFrame) -> pd.DataFrame:
    """Rejected input records as emissions with status ``invalid`` and their reason (the
    scorer turns them into dead-letter messages)."""
    n = len(frame)
    return pd.DataFrame(
        {
            "combo": frame["message_combo"].tolist(),
            "step": [None] * n,
            "status": ["invalid"] * n,
            "count": [None] * n,
            "window_values": [None] * n,
            "produced_at": [None] * n,
            "raw": frame["raw"].tolist(),
            "src_partition": frame["src_partition"].tolist(),
            "src_offset": frame["src_offset"].tolist(),
            "reason": frame["reason"].tolist(),
        },
        columns=EMISSION_COLUMNS,
    )


#: What executors need from a model directory (training plots stay behind).
MODEL_FILE_PATTERNS = ("*.json", "*.pt")


def pack_models(model_path: Path, out_dir: Path) -> Path:
    """Zip the model files under ``model_path`` into ``out_dir``; return the archive.

    The name carries a hash of the contents (``models-<sha>.zip``), so a retrained model
    set is a new archive, never a stale cached one.
    """
    files = sorted(
        {f for pattern in MODEL_FILE_PATTERNS for f in model_path.rglob(pattern) if f.is_file()}
    )
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(model_path).as_posix().encode())
        digest.update(f.read_bytes())
    archive = out_dir / f"models-{digest.hexdigest()[:12]}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.relative_to(model_path).as_posix())
    return archive


def ship_models(spark: SparkSession, model_path: Path) -> str:
    """Send the models to every executor with ``addArchive``; return the name under which
    executors find the unpacked copy (``SparkFiles.get(name)``).  A cluster then needs no
    shared disk for the models."""
    archive = pack_models(model_path, Path(tempfile.mkdtemp(prefix="txn-anomaly-models-")))
    spark.sparkContext.addArchive(str(archive))
    log.info(
        "shipping %s to the executors as %s (%.1f MB)",
        model_path,
        archive.name,
        archive.stat().st_size / 1e6,
    )
    return archive.name


def _make_score_function(
    settings: StreamSettings, kafka: KafkaSettings, shipped_models: str | None = None
) -> Any:
    model_path = str(settings.model_path)
    detector = settings.detector
    scored_topic, dead_topic = kafka.kafka_scored_topic, kafka.kafka_deadletter_topic
    input_topic = kafka.kafka_input_topic
    n_samples = settings.n_samples
    threads = settings.torch_threads
    step_seconds = settings.resolved_step_seconds()

    def score_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from app.streaming.scorer import emissions_to_messages

        path = model_path
        if shipped_models is not None:  # the executor's unpacked copy of the driver's models
            from pyspark import SparkFiles

            path = SparkFiles.get(shipped_models)
        for pdf in batches:
            if len(pdf):
                yield emissions_to_messages(
                    pdf,
                    model_path=path,
                    detector=detector,
                    n_samples=n_samples,
                    torch_threads=threads,
                    scored_topic=scored_topic,
                    deadletter_topic=dead_topic,
                    source_topic=input_topic,
                    step_seconds=step_seconds,
                )

    return score_partition


#: Kafka sources in this job's query plan.  Spark cannot resume a checkpoint written by a
#: plan with another number of sources (jobs before the single-read change had two).
QUERY_SOURCES = 1


def checkpoint_sources(checkpoint: Path) -> int | None:
    """How many sources the newest offsets file of ``checkpoint`` records (None: no batch yet).

    An offsets file is ``v1``, one line of metadata, then one line per source.
    """
    offsets = checkpoint / "offsets"
    batches = [p for p in offsets.glob("*") if p.name.isdigit()] if offsets.is_dir() else []
    if not batches:
        return None
    newest = max(batches, key=lambda p: int(p.name))
    return max(0, len(newest.read_text(encoding="utf-8").splitlines()) - 2)


def check_checkpoint(checkpoint: Path) -> None:
    """Refuse, with what to do, a checkpoint this query plan cannot resume."""
    found = checkpoint_sources(checkpoint)
    if found is not None and found != QUERY_SOURCES:
        raise InfraError(
            f"the checkpoint in {checkpoint} was written by an earlier version of the job "
            f"({found} Kafka sources, this one reads {QUERY_SOURCES}); Spark cannot resume it. "
            "Point CHECKPOINT_LOCATION at an empty directory (or delete this one): the job "
            "then starts from STARTING_OFFSETS and rebuilds each combo's window, and hours "
            "already scored are written again (consumers keep one record per combo and hour)"
        )


def build_query(
    spark: SparkSession,
    kafka: KafkaSettings,
    settings: StreamSettings,
    checkpoint: str,
    known_combos: list[str] | None,
    shipped_models: str | None = None,
) -> StreamingQuery:
    """Wire source → validation → state → scoring → sink, and start the query.

    ``shipped_models`` is the name ``ship_models`` returned: executors then load the models
    from their own unpacked copy instead of ``settings.model_path``.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    reader = (
        spark.readStream.format("kafka")
        .options(**kafka.spark_options())
        .option("subscribe", kafka.kafka_input_topic)
        .option("startingOffsets", settings.starting_offsets)
        .option("failOnDataLoss", "false")
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    parsed = validated(reader.load(), settings, known_combos)

    # One pass over the source: rejected records share the grouping under a NULL key (their
    # group keeps no state) instead of a second branch that would read Kafka again.  The key
    # column keeps the name "combo" (the state store's key schema, as checkpoints written
    # before this change have it); the message's own combo travels as "message_combo".
    routed = parsed.withColumnRenamed("combo", "message_combo").withColumn(
        "combo", F.when(F.col("reason").isNull(), F.col("message_combo"))
    )
    emissions = routed.groupBy("combo").applyInPandasWithState(
        _make_state_function(settings),
        outputStructType=EMISSION_DDL,
        stateStructType=STATE_DDL,
        outputMode="append",
        timeoutConf=GroupStateTimeout.NoTimeout,
    )
    scored = emissions.mapInPandas(
        _make_score_function(settings, kafka, shipped_models), OUTPUT_DDL
    )
    writer = (
        scored.writeStream.format("kafka")
        .options(**kafka.spark_options())
        .option("checkpointLocation", checkpoint)
        .queryName("score_hourly_counts")
        .outputMode("append")
    )
    if settings.trigger_available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{settings.trigger_interval_ms} milliseconds")
    return writer.start()


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging
    from app.spark_session import build_spark_session

    parser = argparse.ArgumentParser(
        prog="python -m app.streaming.job",
        description="Score every hourly count on the input topic with each combo's models and "
        "write every scored hour to the scored topic (bad input to the dead-letter topic). "
        "Settings come from the environment (README, Configuration).",
    )
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="process what is on the topic now, then exit (batch-like run)",
    )
    args = parser.parse_args(argv)
    setup_logging()
    kafka, spark_settings, settings = KafkaSettings(), SparkSettings(), StreamSettings()
    if args.available_now:
        settings = settings.model_copy(update={"trigger_available_now": True})

    from app.errors import AnomalyError
    from app.kafka_io import ensure_product_topics, wait_for_broker
    from app.registry import ModelRegistry

    try:  # a broken model directory or an absent broker: one clear line, exit 1, nothing read
        registry = ModelRegistry(settings.model_path, detector=settings.detector)
        known = registry.check(window=settings.window_size)
        if settings.window_size is None:
            settings = settings.model_copy(update={"window_size": registry.window()})
        if settings.step_seconds is None:
            settings = settings.model_copy(update={"step_seconds": registry.step_seconds()})
        log.info(
            "time step %d s (STEP_SECONDS), window %d steps, gaps up to %d steps bridged",
            settings.resolved_step_seconds(),
            settings.window_size,
            TimeBase(settings.resolved_step_seconds()).hours_to_steps(settings.max_gap_hours),
        )
        log.info("models for %d combos under %s: %s", len(known), settings.model_path, known)
        check_checkpoint(spark_settings.checkpoint_location / "score_hourly_counts")
        wait_for_broker(kafka)
        ensure_product_topics(kafka)
    except AnomalyError as exc:
        log.error("cannot start: %s", exc)
        return 1
    spark = build_spark_session("txn-anomaly-stream", spark_settings)
    checkpoint = str(spark_settings.checkpoint_location / "score_hourly_counts")
    ship = settings.ship_models
    if ship is None:
        ship = not spark_settings.spark_master.startswith("local")
    shipped = ship_models(spark, settings.model_path) if ship else None
    query = build_query(spark, kafka, settings, checkpoint, known, shipped)

    from app.streaming.heartbeat import Heartbeat

    heartbeat = Heartbeat(kafka, query, combos=known)
    heartbeat.start()
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping the query", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while query.isActive and not stop.is_set():
            query.awaitTermination(timeout=1)
        if query.exception() is not None:
            log.error("query failed: %s", query.exception())
            return 1
    finally:
        heartbeat.stop()
        if query.isActive:
            query.stop()
        spark.stop()
    return 0


def progress_summary(progress: dict[str, Any]) -> str:
    """One log line from a query progress event."""
    return json.dumps(
        {
            k: progress.get(k)
            for k in ("batchId", "numInputRows", "inputRowsPerSecond", "processedRowsPerSecond")
        }
    )


if __name__ == "__main__":
    sys.exit(main())
