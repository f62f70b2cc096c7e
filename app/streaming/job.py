"""The Spark Structured Streaming job: Kafka hourly counts → per-combo state → scores → Kafka.

The only module that imports pyspark for the pipeline.  Plan of one query::

    Kafka (input topic, read once per micro-batch)
      → mapInPandas(validate_frame)   app.ingest.validate on the raw key/value bytes: an
                                      accepted hour or one exact reason; raw copy bounded
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
(combo, hour) — the dashboard does.  A re-written record is byte-identical: everything in
it, ``scored_at`` and ``failed_at`` included, derives from the input and the micro-batch's
own timestamp (Spark keeps it in the offset log and reuses it when the batch is re-run),
and the wall-clock future guard measures from that same timestamp.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pandas as pd

from app import artifacts
from app.config import SINK_MAX_REQUEST_BYTES, KafkaSettings, SparkSettings, StreamSettings
from app.errors import InfraError
from app.ingest import Accepted, Rules, bounded_raw, validate
from app.streaming.state import ComboWindowState, StepCount, advance

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery
    from pyspark.sql.streaming.state import GroupState

log = logging.getLogger(__name__)

STATE_DDL = (
    "combo STRING, last_step LONG, window_values STRING, run_length LONG, "
    "held_step LONG, held_count DOUBLE, held_source STRING"
)
#: What the validation step hands to the stateful step (one row per input message).
VALIDATED_DDL = (
    "combo STRING, step LONG, count DOUBLE, produced_at STRING, raw STRING, raw_bytes LONG, "
    "raw_sha256 STRING, reason STRING, src_topic STRING, src_partition INT, src_offset LONG"
)
VALIDATED_COLUMNS = [c.split()[0] for c in VALIDATED_DDL.split(", ")]
EMISSION_DDL = (
    "combo STRING, step LONG, status STRING, count DOUBLE, window_values STRING, "
    "produced_at STRING, raw STRING, raw_bytes LONG, raw_sha256 STRING, "
    "src_partition INT, src_offset LONG, reason STRING"
)
#: Per-record source fields kept with a row while it may still be dead-lettered.
SOURCE_FIELDS = ("produced_at", "raw", "raw_bytes", "raw_sha256", "src_partition", "src_offset")
EMISSION_COLUMNS = [c.split()[0] for c in EMISSION_DDL.split(", ")]
OUTPUT_DDL = "topic STRING, key STRING, value STRING"


def validate_frame(
    pdf: pd.DataFrame, rules: Rules, max_raw_bytes: int, now_s: float
) -> pd.DataFrame:
    """Kafka source rows (``key``, ``value`` bytes, ``src_*``) → ``VALIDATED_COLUMNS``.

    ``app.ingest.validate`` on each message; a rejected one keeps its key (as text) as
    ``combo``, for the dead letter's key.  Plain pandas: the job's validation step and the
    unit tests share it.
    """
    out: dict[str, list[Any]] = {c: [] for c in VALIDATED_COLUMNS}
    for key, value, topic, partition, offset in zip(
        pdf["key"],
        pdf["value"],
        pdf["src_topic"],
        pdf["src_partition"],
        pdf["src_offset"],
        strict=True,
    ):
        key_b = None if key is None else bytes(key)
        value_b = None if value is None else bytes(value)
        result = validate(value_b, key_b, rules, now_s)
        copy = bounded_raw(value_b, max_raw_bytes)
        combo: str | None
        if isinstance(result, Accepted):
            combo, step, count = result.combo, result.step, float(result.count)
            produced_at, reason = result.produced_at, None
        else:
            combo = None if key_b is None else key_b.decode("utf-8", "replace")[:200]
            step, count, produced_at, reason = None, None, None, result.reason
        for name, v in (
            ("combo", combo),
            ("step", step),
            ("count", count),
            ("produced_at", produced_at),
            ("raw", copy.raw),
            ("raw_bytes", copy.raw_bytes),
            ("raw_sha256", copy.raw_sha256),
            ("reason", reason),
            ("src_topic", topic),
            ("src_partition", int(partition)),
            ("src_offset", int(offset)),
        ):
            out[name].append(v)
    frame = pd.DataFrame(out, columns=VALIDATED_COLUMNS)
    # Nullable integer columns: a None in a plain int column would become a float NaN.
    for name in ("step", "raw_bytes"):
        frame[name] = frame[name].astype("Int64")
    return frame


def _make_validate_function(settings: StreamSettings, known_combos: list[str] | None) -> Any:
    rules = Rules.from_settings(settings, known_combos)
    max_raw = settings.deadletter_max_raw_bytes

    def validate_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            if len(pdf):
                now_s = int(pdf["batch_ms"].iloc[0]) / 1000.0
                yield validate_frame(pdf, rules, max_raw, now_s)

    return validate_partition


def validated(
    raw: DataFrame, settings: StreamSettings, known_combos: list[str] | None
) -> DataFrame:
    """Validate Kafka records with ``app.ingest.validate`` (``reason`` NULL for a good one).

    Spark only carries the bytes in and the records out.  Columns out: ``VALIDATED_DDL``
    (combo, step, count, produced_at, raw + raw_bytes + raw_sha256, reason, src_topic,
    src_partition, src_offset).  ``batch_ms`` is the micro-batch's timestamp
    (``current_timestamp()`` in a stream), the "now" of the future-hour guard.
    """
    from pyspark.sql import functions as F

    source = raw.select(
        F.col("key"),
        F.col("value"),
        F.col("topic").alias("src_topic"),
        F.col("partition").alias("src_partition"),
        F.col("offset").alias("src_offset"),
        F.unix_millis(F.current_timestamp()).alias("batch_ms"),
    )
    return source.mapInPandas(_make_validate_function(settings, known_combos), VALIDATED_DDL)


def _make_state_function(settings: StreamSettings) -> Any:
    if settings.window_size is None:
        raise ValueError("StreamSettings.window_size must be resolved before building the query")
    window = settings.window_size
    max_gap = settings.max_gap_steps()
    max_ahead = settings.max_ahead_steps

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
            StepCount(combo, int(r.step), float(r.count), ref=i, source=_source_text(r))
            for i, r in enumerate(frame.itertuples(index=False))
        ]
        new_state, emissions = advance(
            current, rows, window=window, max_gap_steps=max_gap, max_ahead_steps=max_ahead
        )
        state.update(new_state.to_row())
        out = []
        for e in emissions:
            # A held row refuted or confirmed in a later batch is known only by its source.
            src = json.loads(e.source) if e.source else dict.fromkeys(SOURCE_FIELDS)
            # Explicit None for every absent field (an object column): a missing key would
            # be a float NaN column, which pyarrow turns into a ChunkedArray for a STRING.
            out.append({**e.to_record(), **src})
        yield pd.DataFrame(out, columns=EMISSION_COLUMNS)

    return advance_group


def _source_text(row: Any) -> str:
    """A validated row's source fields as JSON text (kept in the state while it is held)."""
    values: dict[str, Any] = {}
    for name in SOURCE_FIELDS:
        v = getattr(row, name)
        values[name] = None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v
        if values[name] is not None and name in ("raw_bytes", "src_partition", "src_offset"):
            values[name] = int(values[name])
    return json.dumps(values, separators=(",", ":"))


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
            "raw_bytes": frame["raw_bytes"].tolist(),
            "raw_sha256": frame["raw_sha256"].tolist(),
            "src_partition": frame["src_partition"].tolist(),
            "src_offset": frame["src_offset"].tolist(),
            "reason": frame["reason"].tolist(),
        },
        columns=EMISSION_COLUMNS,
    )


#: What executors need from a model directory (training plots stay behind).
def ship_models(spark: SparkSession, model_path: Path) -> str:
    """Send the models to every executor with ``addArchive``; return the name under which
    executors find the unpacked copy (``SparkFiles.get(name)``).  A cluster then needs no
    shared disk for the models."""
    archive = artifacts.pack(model_path, Path(tempfile.mkdtemp(prefix="txn-anomaly-models-")))
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
    max_raw = settings.deadletter_max_raw_bytes

    def score_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from app.streaming.scorer import batch_time_iso, emissions_to_messages

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
                    scored_at=batch_time_iso(int(pdf["batch_ms"].iloc[0])),
                    max_raw_bytes=max_raw,
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


#: The layout of the per-combo state this job keeps (2: the window plus a held hour, see
#: ``state.advance``'s ``max_ahead_steps``). Spark cannot read state of another layout; the
#: job writes this next to a new checkpoint and refuses a checkpoint without it.
STATE_LAYOUT = "2"
STATE_LAYOUT_FILE = "txn_anomaly_state_layout"


def check_checkpoint(checkpoint: Path) -> None:
    """Refuse, with what to do, a checkpoint this query plan cannot resume (and mark a new
    one with this job's state layout)."""
    found = checkpoint_sources(checkpoint)
    marker = checkpoint / STATE_LAYOUT_FILE
    if found is None:
        checkpoint.mkdir(parents=True, exist_ok=True)
        marker.write_text(STATE_LAYOUT, encoding="utf-8")
        return
    layout = marker.read_text(encoding="utf-8").strip() if marker.exists() else "1"
    if layout != STATE_LAYOUT:
        raise InfraError(
            f"the checkpoint in {checkpoint} holds per-combo state of layout {layout}, this "
            f"job keeps layout {STATE_LAYOUT} (a held far-ahead hour was added); Spark cannot "
            "resume it. Point CHECKPOINT_LOCATION at an empty directory (or delete this one): "
            "the job then starts from STARTING_OFFSETS and rebuilds each combo's window, and "
            "hours already scored are written again (consumers keep one record per combo and "
            "hour)"
        )
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
    # The micro-batch's timestamp (the same on a re-run of the batch): scored_at/failed_at.
    stamped = emissions.withColumn("batch_ms", F.unix_millis(F.current_timestamp()))
    scored = stamped.mapInPandas(_make_score_function(settings, kafka, shipped_models), OUTPUT_DDL)
    writer = (
        scored.writeStream.format("kafka")
        .options(**kafka.spark_options())
        # Explicit: the producer's limit on one request (so on one record).  Dead letters
        # are bounded (DEADLETTER_MAX_RAW_BYTES <= half of it), scored records are small.
        .option("kafka.max.request.size", str(SINK_MAX_REQUEST_BYTES))
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

    args = _parse_args(argv)
    setup_logging()
    kafka, spark_settings, settings = KafkaSettings(), SparkSettings(), StreamSettings()
    if args.available_now:
        settings = settings.model_copy(update={"trigger_available_now": True})

    from app.errors import AnomalyError

    try:  # a broken model directory or an absent broker: one clear line, exit 1, nothing read
        settings, known = _prepare(kafka, spark_settings, settings)
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
    stop = _stop_on_signals()
    try:
        return _await_query(query, stop)
    finally:
        heartbeat.stop()
        if query.isActive:
            query.stop()
        spark.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The job's command line (only ``--available-now``: settings come from the environment)."""
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
    return parser.parse_args(argv)


def _prepare(
    kafka: KafkaSettings, spark_settings: SparkSettings, settings: StreamSettings
) -> tuple[StreamSettings, list[str]]:
    """Everything checked before Spark starts: every combo's models load (the window and
    step default to theirs), the checkpoint matches this job, the broker answers and the
    topics exist.  The settings resolved, and the combos with models.

    Raises
    ------
    AnomalyError
        A broken model directory, a checkpoint of another layout, or no broker.
    """
    from app.kafka_io import ensure_product_topics, wait_for_broker
    from app.registry import ModelRegistry

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
        settings.max_gap_steps(),
    )
    log.info("models for %d combos under %s: %s", len(known), settings.model_path, known)
    check_checkpoint(spark_settings.checkpoint_location / "score_hourly_counts")
    wait_for_broker(kafka)
    ensure_product_topics(kafka)
    return settings, known


def _stop_on_signals() -> threading.Event:
    """An event that SIGTERM and SIGINT set (each logged) instead of killing the process."""
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping the query", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop


def _await_query(query: StreamingQuery, stop: threading.Event) -> int:
    """Wait until ``query`` ends or ``stop`` is set; 1 when the query failed, else 0."""
    while query.isActive and not stop.is_set():
        query.awaitTermination(timeout=1)
    if query.exception() is not None:
        log.error("query failed: %s", query.exception())
        return 1
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
