"""Replay hourly counts from a CSV into Kafka, one hour at a time (key = combo).

Sends the chosen split (``DATA_SPLIT``, default ``test``) of every combo, or only
``COMBO`` when set.  The ``WINDOW_SIZE`` hours just before the split go first, without delay, so
the split's very first hour already has a full window and is scored.  Labels never leave
this process: only ``combo``, ``hour``, ``count`` and ``produced_at`` are sent.
Missing hours are simply not sent (the job reports them as ``missing``).

With ``LOOP_DATA=true`` the split is replayed forever, each pass shifted forward by
the split's length, so hours keep increasing.  Before streaming, the producer waits
for the broker and for a fresh heartbeat of the streaming job (``WAIT_FOR_JOB``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import pandas as pd
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app import PROJECT_ROOT
from app.config import KafkaSettings
from app.contracts import HourlyCount, format_hour
from app.errors import DataError, InfraError

log = logging.getLogger(__name__)


class ProducerSettings(BaseSettings):
    """Producer knobs (environment variables, README has the table)."""

    model_config = SettingsConfigDict(extra="forbid", case_sensitive=False)

    data_path: Path = PROJECT_ROOT / "data" / "synthetic_transactions.csv"
    data_split: str = "test"
    combo: str | None = None
    message_delay_seconds: float = Field(default=1.0, ge=0)
    loop_data: bool = False
    window_size: int = Field(default=840, ge=0)  # warm-up hours sent before the split
    wait_for_job: bool = True
    job_ready_timeout_s: float = Field(default=600.0, gt=0)
    time_column: str = "timestamp"
    key_column: str = "combo"
    value_column: str = "count"
    freq: str = "auto"  # the data's time step; auto = inferred from its timestamps
    max_hours: int | None = Field(default=None, ge=1)


def load_replay(settings: ProducerSettings) -> pd.DataFrame:
    """The rows to send, oldest first: the warm-up prefix, then the split.

    Returns a frame with ``timestamp`` (UTC), ``combo``, ``count`` (int) and ``warmup``
    (bool); missing hours are absent.
    """
    from app.data import ColumnSpec, load_counts

    columns = ColumnSpec(
        time=settings.time_column,
        key=None if settings.key_column.lower() in ("", "none") else settings.key_column,
        value=settings.value_column,
    )
    frame = load_counts(settings.data_path, columns, freq=settings.freq)
    if settings.combo:
        combos = sorted(frame["combo"].unique())
        if settings.combo not in combos:
            raise DataError(
                f"COMBO={settings.combo!r} is not in {settings.data_path} (combos there: {combos})"
            )
        frame = frame[frame["combo"] == settings.combo]
    splits = sorted(frame["split"].unique())
    if settings.data_split not in (*splits, "all"):
        raise DataError(f"DATA_SPLIT={settings.data_split!r} is not one of {splits} or 'all'")
    parts = []
    for _, series in frame.groupby("combo", sort=True):
        series = series.sort_values("timestamp").reset_index(drop=True)
        if settings.data_split == "all":
            chosen = series.assign(warmup=False)
        else:
            inside = series.index[series["split"] == settings.data_split]
            first = int(inside.min())
            start = max(0, first - settings.window_size)
            chosen = series.iloc[start : int(inside.max()) + 1].copy()
            chosen["warmup"] = chosen.index < first
        parts.append(chosen)
    replay = pd.concat(parts, ignore_index=True)
    replay = replay[~replay["missing"]]
    replay = replay.assign(count=replay["value"].round().astype("int64"))
    out = (
        replay[["timestamp", "combo", "count", "warmup"]]
        .sort_values(["timestamp", "combo"], kind="stable")
        .reset_index(drop=True)
    )
    out.attrs["step_seconds"] = int(frame.attrs["step_seconds"])
    return out


def hours(replay: pd.DataFrame, loop: bool, step: pd.Timedelta) -> Iterator[pd.DataFrame]:
    """Yield one frame per hour; with ``loop``, replay forever shifted forward each pass."""
    span = replay["timestamp"].max() - replay["timestamp"].min() + step
    shift = pd.Timedelta(0)
    while True:
        for _, group in replay.groupby("timestamp", sort=True):
            yield group.assign(timestamp=group["timestamp"] + shift)
        if not loop:
            return
        shift += span
        replay = replay[~replay["warmup"]]
        log.info("LOOP_DATA: replaying again, shifted forward by %s", shift)


def wait_for_job(kafka: KafkaSettings, timeout_s: float, not_before: datetime) -> None:
    """Block until the streaming job publishes a 'running' heartbeat newer than ``not_before``."""
    from app.kafka_io import latest_record

    deadline = time.monotonic() + timeout_s
    next_log = 0.0
    while time.monotonic() < deadline:
        raw = latest_record(kafka, kafka.kafka_status_topic, timeout_ms=2_000)
        if raw:
            beat = json.loads(raw)
            sent = datetime.fromisoformat(
                beat.get("sent_at", "1970-01-01T00:00:00Z").replace("Z", "+00:00")
            )
            if beat.get("state") == "running" and sent >= not_before:
                log.info("streaming job is ready (heartbeat at %s)", beat["sent_at"])
                return
        if time.monotonic() >= next_log:
            log.info(
                "waiting for the streaming job's heartbeat on %s ...", kafka.kafka_status_topic
            )
            next_log = time.monotonic() + 15
        time.sleep(1.0)
    raise InfraError(
        f"the streaming job sent no heartbeat within {timeout_s:.0f}s: is it "
        "running (`python -m app.streaming.job`)? Set WAIT_FOR_JOB=false to skip"
    )


def run(settings: ProducerSettings, kafka: KafkaSettings, stop: threading.Event) -> int:
    """Stream the replay; return the number of messages sent."""
    from kafka import KafkaProducer

    from app.kafka_io import ensure_product_topics, wait_for_broker

    replay = load_replay(settings)
    n_hours = replay["timestamp"].nunique()
    log.info(
        "replaying %d messages (%d hours, %d combos, split %s, %d warm-up hours) from %s",
        len(replay),
        n_hours,
        replay["combo"].nunique(),
        settings.data_split,
        replay.loc[replay["warmup"], "timestamp"].nunique(),
        settings.data_path,
    )
    wait_for_broker(kafka)
    ensure_product_topics(kafka)
    if settings.wait_for_job:
        wait_for_job(
            kafka,
            settings.job_ready_timeout_s,
            not_before=datetime.now(UTC) - timedelta(seconds=30),
        )
    producer = KafkaProducer(
        **kafka.client_options(),
        acks="all",
        enable_idempotence=True,
        retries=2_147_483_647,
        max_in_flight_requests_per_connection=5,
        linger_ms=5,
        delivery_timeout_ms=600_000,
        # kafka-python backs off up to 30 s between reconnects (the Java client: 1 s), so
        # after a broker outage the stream would stall that long once the broker is back.
        reconnect_backoff_max_ms=2_000,
    )
    sent = 0
    try:
        step = pd.Timedelta(seconds=int(replay.attrs.get("step_seconds", 3600)))
        for i, group in enumerate(hours(replay, settings.loop_data, step)):
            if stop.is_set() or (settings.max_hours and i >= settings.max_hours):
                break
            for row in group.itertuples(index=False):
                message = HourlyCount.make(
                    str(row.combo), row.timestamp.to_pydatetime(), int(row.count)
                )
                producer.send(
                    kafka.kafka_input_topic,
                    key=message.combo.encode(),
                    value=message.to_json_bytes(),
                )
                sent += 1
            producer.flush()
            if i % 24 == 0 or i + 1 == n_hours:
                log.info(
                    "sent hour %s (%d/%d, %d messages so far)",
                    format_hour(group["timestamp"].iloc[0].to_pydatetime()),
                    i + 1,
                    n_hours,
                    sent,
                )
            if settings.message_delay_seconds and not group["warmup"].all():
                stop.wait(settings.message_delay_seconds)  # warm-up hours go at once
    finally:
        producer.flush()
        producer.close()
    log.info("done: %d messages sent", sent)
    return sent


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging

    parser = argparse.ArgumentParser(
        prog="python -m producer.producer",
        description="Replay hourly transaction counts from a CSV into Kafka (key = combo). "
        "Settings come from the environment: DATA_PATH, DATA_SPLIT (train/val/test/all), "
        "COMBO (one combo only), MESSAGE_DELAY_SECONDS (between hours), LOOP_DATA, "
        "WINDOW_SIZE (warm-up hours sent first), WAIT_FOR_JOB, KAFKA_BOOTSTRAP_SERVERS, "
        "KAFKA_INPUT_TOPIC. Labels are never sent.",
    )
    parser.parse_args(argv)
    setup_logging()
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping after this hour", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        run(ProducerSettings(), KafkaSettings(), stop)
    except (DataError, InfraError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
