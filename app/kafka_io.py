"""kafka-python helpers shared by the producer, the dashboard, the tools and the tests."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from app.config import KafkaSettings
from app.errors import InfraError

log = logging.getLogger(__name__)


def broker_is_ready(bootstrap_servers: str, timeout_ms: int = 3_000, **options: object) -> bool:
    """Whether the cluster answers a metadata request within ``timeout_ms``."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers.split(","),
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            **options,
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def wait_for_broker(settings: KafkaSettings, timeout_s: float = 120.0) -> None:
    """Block until Kafka answers, logging while waiting; raise ``InfraError`` on time-out."""
    options = {
        k: v
        for k, v in settings.client_options().items()
        if k not in ("bootstrap_servers", "request_timeout_ms")
    }
    deadline = time.monotonic() + timeout_s
    next_log = 0.0
    while time.monotonic() < deadline:
        if broker_is_ready(settings.kafka_bootstrap_servers, **options):
            return
        if time.monotonic() >= next_log:
            log.info("waiting for Kafka at %s ...", settings.kafka_bootstrap_servers)
            next_log = time.monotonic() + 10
        time.sleep(1.0)
    raise InfraError(
        f"Kafka at {settings.kafka_bootstrap_servers} did not answer within {timeout_s:.0f}s: "
        "is the broker up (`make kafka-up`) and KAFKA_BOOTSTRAP_SERVERS right?"
    )


def ensure_topics(settings: KafkaSettings, topics: Iterable[str], partitions: int) -> None:
    """Create ``topics`` with ``partitions`` partitions where they do not exist yet."""
    admin = KafkaAdminClient(**settings.client_options())
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=t,
                num_partitions=partitions,
                replication_factor=settings.kafka_replication_factor,
            )
            for t in topics
            if t not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted)
            log.info("created topics %s with %d partitions", [t.name for t in wanted], partitions)
    except KafkaError as exc:
        raise InfraError(
            f"could not create topics on {settings.kafka_bootstrap_servers}: {exc}"
        ) from exc
    finally:
        admin.close()


def ensure_product_topics(settings: KafkaSettings) -> None:
    """Create the input, scored and dead-letter topics (``KAFKA_PARTITIONS`` each) and
    the one-partition status topic that carries the job's heartbeats."""
    ensure_topics(
        settings,
        [settings.kafka_input_topic, settings.kafka_scored_topic, settings.kafka_deadletter_topic],
        settings.kafka_partitions,
    )
    ensure_topics(settings, [settings.kafka_status_topic], 1)


def create_topic_set(kafka: KafkaSettings, prefix: str, partitions: int) -> KafkaSettings:
    """``kafka`` with its four topics renamed ``<prefix>-in``, ``-scored``, ``-dead`` and
    ``-status`` (``partitions`` each, the status topic 1), created (tests, benchmarks)."""
    settings = kafka.model_copy(
        update={
            "kafka_input_topic": f"{prefix}-in",
            "kafka_scored_topic": f"{prefix}-scored",
            "kafka_deadletter_topic": f"{prefix}-dead",
            "kafka_status_topic": f"{prefix}-status",
            "kafka_partitions": partitions,
        }
    )
    ensure_product_topics(settings)
    return settings


def latest_record(settings: KafkaSettings, topic: str, timeout_ms: int = 5_000) -> bytes | None:
    """The value of the newest record of a one-partition topic, or None when it is empty."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **settings.client_options(), enable_auto_commit=False, consumer_timeout_ms=timeout_ms
    )
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        if end == 0:
            return None
        consumer.seek(tp, end - 1)
        for message in consumer:
            return bytes(message.value)
        return None
    finally:
        consumer.close()
