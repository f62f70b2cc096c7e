"""The broker goes away mid-stream for ~20 s and comes back: nothing is lost.

A broker of its own (free ports, a temporary data directory; the session broker is not
touched), the real streaming job (``python -m app.streaming.job``) and the real producer
(``python -m producer.producer``, ``WAIT_FOR_JOB=true``) as child processes.  Once some
hours are scored the broker is stopped (SIGTERM, controlled shutdown), kept down, then
started again on the same data directory and ports.  Expected:

* the producer blocks while the broker is away (``acks=all``, idempotent, unlimited
  retries within ``delivery_timeout_ms``), then delivers every hour and exits 0;
* the job survives (the Kafka source and sink retry; the query does not fail) and goes on
  from its checkpoint by itself: no restart, no operator;
* every hour the producer sent reaches the scored topic — at least once; after dedup by
  (combo, hour), as the dashboard does, the set of hours is complete, and a re-written
  hour carries the same score.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from app.config import KafkaSettings
from app.contracts import format_hour
from app.kafka_local import LocalKafkaBroker
from producer.producer import ProducerSettings, load_replay

from .helpers import (
    dedup_scored,
    fresh_topics,
    good,
    hour_iso,
    job_env,
    kill_group,
    read_all,
    send,
    service_env,
    start,
    stop_gracefully,
    tail,
    topic_size,
    wait_for,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

COMBO = "Accel_CMP"  # streamed by the producer
OTHER = "Star_nopin"  # sent by the test first, to see the job scoring before the outage
WARMUP = 24  # the tiny models' window: these hours go at once, before the delayed ones
HOURS = 64  # producer MAX_HOURS: 24 warm-up hours at once, then 40 hours 0.4 s apart
DELAY_S = 0.4
OUTAGE_S = 20


@pytest.fixture
def own_broker(tmp_path: Path):
    broker = LocalKafkaBroker.on_free_ports(tmp_path / "kafka", heap="256m")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_producer_and_job_ride_out_a_broker_outage(
    own_broker: LocalKafkaBroker, tiny_models: Path, tmp_path: Path
) -> None:
    kafka = fresh_topics(
        KafkaSettings(
            kafka_bootstrap_servers=own_broker.bootstrap_servers, kafka_request_timeout_ms=10_000
        ),
        partitions=2,
    )
    replay = load_replay(ProducerSettings(combo=COMBO, window_size=WARMUP, max_hours=HOURS))
    sent_hours = sorted(replay["timestamp"].unique())[:HOURS]
    expected = {(COMBO, format_hour(pd.Timestamp(t).to_pydatetime())) for t in sent_hours}
    expected |= {(OTHER, hour_iso(i)) for i in range(WARMUP + 2)}

    job_log, producer_log = tmp_path / "job.log", tmp_path / "producer.log"
    job = start("app.streaming.job", job_env(kafka, tiny_models, tmp_path / "ckpt"), job_log)
    producer = None
    try:

        def scored_hours() -> set[tuple[str, str]]:
            return set(dedup_scored(read_all(kafka, kafka.kafka_scored_topic, idle_ms=500)))

        # 1. The job is up and has scored another combo's hours (its Python workers are warm).
        send(kafka, kafka.kafka_input_topic, [good(OTHER, i) for i in range(WARMUP + 2)])
        wait_for(
            lambda: len(scored_hours()) == WARMUP + 2,
            180,
            f"the job's first hours:\n{tail(job_log)}",
        )
        # 2. The real producer streams COMBO (24 warm-up hours at once, then one every DELAY_S).
        producer = start(
            "producer.producer",
            service_env(
                kafka,
                COMBO=COMBO,
                WINDOW_SIZE=str(WARMUP),
                MAX_HOURS=str(HOURS),
                MESSAGE_DELAY_SECONDS=str(DELAY_S),
                WAIT_FOR_JOB="true",
                JOB_READY_TIMEOUT_S="60",
            ),
            producer_log,
        )
        # 3. Mid-stream, the broker goes away for OUTAGE_S, then comes back (same data dir).
        wait_for(
            lambda: topic_size(kafka, kafka.kafka_input_topic) >= 2 * WARMUP + 2 + 10,
            120,
            f"the producer streaming:\n{tail(producer_log)}",
            interval_s=0.3,
        )
        before = len(scored_hours())
        produced = topic_size(kafka, kafka.kafka_input_topic) - (WARMUP + 2)
        assert produced < HOURS, "the producer finished before the outage: slow it down"
        own_broker.stop()
        down_at = time.monotonic()
        time.sleep(OUTAGE_S)
        assert job.poll() is None, f"the job died while the broker was away:\n{tail(job_log)}"
        assert producer.poll() is None, f"the producer gave up:\n{tail(producer_log)}"
        own_broker.start()
        print(
            f"broker down for {time.monotonic() - down_at:.1f}s; before it: {produced} of "
            f"{HOURS} hours produced, {before} hours scored"
        )

        # 4. Without any restart, everything arrives.
        wait_for(
            lambda: scored_hours() >= expected,
            180,
            f"every hour after the outage\njob:\n{tail(job_log)}\nproducer:\n{tail(producer_log)}",
        )
        assert producer.wait(timeout=60) == 0, tail(producer_log)
        print(f"all hours scored {time.monotonic() - down_at:.0f}s after the broker went down")
        assert job.poll() is None, f"the job did not recover by itself:\n{tail(job_log)}"

        records = read_all(kafka, kafka.kafka_scored_topic)
        groups = dedup_scored(records)
        assert set(groups) == expected
        for key, copies in groups.items():
            assert len({(c["status"], c["count"], c.get("score")) for c in copies}) == 1, key
        # No input message was duplicated by the producer's retries (idempotent producer):
        # a duplicate would be dead-lettered as "duplicate hour".
        dead = read_all(kafka, kafka.kafka_deadletter_topic)
        assert dead == [], [d["reason"] for d in dead]
    finally:
        if producer is not None:
            stop_gracefully(producer, timeout_s=5)
        kill_group(job)
