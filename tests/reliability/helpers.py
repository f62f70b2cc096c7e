"""Shared pieces of the fault-injection tests: topics, messages, readers, child processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from app import PROJECT_ROOT
from app.config import KafkaSettings, SparkSettings, StreamSettings
from app.contracts import format_hour
from app.dashboard.settings import DashboardSettings
from app.kafka_io import create_topic_set
from producer.producer import ProducerSettings, run

#: Where the tests' streams start (any aligned hour between 2000 and now works).
T0 = datetime(2025, 5, 12, 0, tzinfo=UTC)

Message = tuple[bytes | None, bytes | None]  # (key, value)


def fresh_topics(kafka: KafkaSettings, partitions: int = 2) -> KafkaSettings:
    """``kafka`` with four new, created topics (input, scored, dead-letter, status)."""
    return create_topic_set(kafka, f"rel-{uuid.uuid4().hex[:10]}", partitions)


def hour_iso(i: int, start: datetime = T0) -> str:
    """The ISO hour ``i`` hours after ``start``."""
    return format_hour(start + timedelta(hours=i))


def count_at(combo: str, i: int) -> int:
    """A smooth, deterministic, positive count for hour ``i`` of ``combo``."""
    base = 1000 if combo == "Accel_CMP" else 400
    return base + (37 * i) % 100 + (i % 24) * 5


def good(combo: str, i: int, count: int | None = None, start: datetime = T0) -> Message:
    """A valid input message (key = combo) for hour ``i``."""
    value = {
        "combo": combo,
        "hour": hour_iso(i, start),
        "count": count_at(combo, i) if count is None else count,
        "produced_at": "2025-05-12T00:00:00.000Z",
    }
    return combo.encode(), json.dumps(value, separators=(",", ":")).encode()


def send(kafka: KafkaSettings, topic: str, messages: Iterable[Message]) -> int:
    """Send messages in order (acks=all, one in flight: the order per key is kept)."""
    producer = KafkaProducer(
        **kafka.client_options(), acks="all", max_in_flight_requests_per_connection=1
    )
    n = 0
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
            n += 1
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    return n


def replay(kafka: KafkaSettings, combo: str, hours: int, warmup: int, **settings_: Any) -> int:
    """The real producer, all at once (no delay, no wait for a job): ``warmup`` steps before
    the demo CSV's test split and then ``hours`` of it, for ``combo``; messages sent.
    ``settings_`` go to ``ProducerSettings`` (another ``data_path``, say)."""
    settings = ProducerSettings(
        combo=combo,
        message_delay_seconds=0,
        wait_for_job=False,
        max_hours=hours,
        window_size=warmup,
        **settings_,
    )
    return run(settings, kafka, threading.Event())


def read_all(kafka: KafkaSettings, topic: str, idle_ms: int = 2_000) -> list[dict[str, Any]]:
    """Every record of ``topic`` (JSON values), read from the beginning until up to date."""
    consumer = KafkaConsumer(
        **kafka.client_options(), enable_auto_commit=False, consumer_timeout_ms=idle_ms
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets {end}")
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(json.loads(m.value) for m in batch)
        return out
    finally:
        consumer.close()


def read_values(kafka: KafkaSettings, topic: str, idle_ms: int = 2_000) -> list[bytes]:
    """Every record value of ``topic`` as the bytes on the broker."""
    consumer = KafkaConsumer(
        **kafka.client_options(), enable_auto_commit=False, consumer_timeout_ms=idle_ms
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[bytes] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets {end}")
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(m.value for m in batch)
        return out
    finally:
        consumer.close()


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 1.0) -> Any:
    """Call ``check`` until it returns something truthy (returned) or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


#: Every environment variable a service reads: the tests' children see only what they set.
_SETTINGS_NAMES = {
    name.upper()
    for cls in (KafkaSettings, SparkSettings, StreamSettings, ProducerSettings, DashboardSettings)
    for name in cls.model_fields
} | {"PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "LOG_LEVEL"}


def service_env(kafka: KafkaSettings, **extra: str | Path) -> dict[str, str]:
    """The environment of a child service: this interpreter, the topics, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTINGS_NAMES}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "LOG_LEVEL": "INFO",
            "KAFKA_BOOTSTRAP_SERVERS": kafka.kafka_bootstrap_servers,
            "KAFKA_INPUT_TOPIC": kafka.kafka_input_topic,
            "KAFKA_SCORED_TOPIC": kafka.kafka_scored_topic,
            "KAFKA_DEADLETTER_TOPIC": kafka.kafka_deadletter_topic,
            "KAFKA_STATUS_TOPIC": kafka.kafka_status_topic,
            "KAFKA_PARTITIONS": str(kafka.kafka_partitions),
        }
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def job_env(kafka: KafkaSettings, models: Path, checkpoints: Path, **extra: str) -> dict[str, str]:
    """Environment of ``python -m app.streaming.job`` on one core-pair, fast triggers."""
    return service_env(
        kafka,
        MODEL_PATH=models,
        DETECTOR="fcvae",
        CHECKPOINT_LOCATION=checkpoints,
        SPARK_MASTER="local[2]",
        SPARK_SHUFFLE_PARTITIONS="2",
        SPARK_DRIVER_MEMORY="768m",
        TRIGGER_INTERVAL_MS="500",
        **extra,
    )


def start(
    module: str,
    env: dict[str, str],
    log_path: Path,
    *args: str,
    cwd: Path = PROJECT_ROOT,
) -> subprocess.Popen[bytes]:
    """``python -m module *args`` in its own process group (so that a kill reaches the JVM
    too)."""
    log_file = open(log_path, "ab")  # noqa: SIM115 - the child keeps it open
    try:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        log_file.close()


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the whole process group of ``proc`` and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # Children that outlived the leader (Spark's JVM, Python workers) still carry its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop_gracefully(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM the group, wait, then SIGKILL whatever is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
    kill_group(proc)


def run_job_available_now(spark: Any, kafka: KafkaSettings, models: Path, checkpoint: Path) -> None:
    """The job's real query (``build_query``, FCVAE, available-now trigger) on what is on
    ``kafka``'s input topic now, run to the end on the session's Spark."""
    from app.registry import ModelRegistry
    from app.streaming.job import build_query

    registry = ModelRegistry(models, detector="fcvae")
    known = registry.check()
    settings = StreamSettings(
        model_path=models,
        detector="fcvae",
        window_size=registry.window(),
        step_seconds=registry.step_seconds(),  # as the job's entry point resolves it
        trigger_available_now=True,
    )
    query = build_query(spark, kafka, settings, str(checkpoint), known)
    assert query.awaitTermination(timeout=300), "the query did not finish"
    assert query.exception() is None, query.exception()
    assert not query.isActive


#: Fields of a scored record that must be identical wherever and however often it is computed.
SCORED_FIELDS = (
    "status",
    "count",
    "score",
    "threshold",
    "is_anomaly",
    "fcvae_score",
    "expected",
    "model_version",
)


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a child's log (for assertion messages)."""
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def dedup_scored(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Scored records grouped by (combo, hour)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["combo"], record["hour"]), []).append(record)
    return groups


def topic_size(kafka: KafkaSettings, topic: str) -> int:
    """How many records ``topic`` holds (sum of its partitions' end offsets)."""
    consumer = KafkaConsumer(**kafka.client_options(), enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()
