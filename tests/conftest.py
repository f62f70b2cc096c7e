"""Session-wide fixtures: one real Kafka broker and one real SparkSession per test run.

Both start lazily (only when a test asks for them), on free ports and in temporary
directories, and stop at the end of the run even when tests fail.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import KafkaSettings, SparkSettings
from app.kafka_local import LocalKafkaBroker

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaBroker]:
    """A real single-node KRaft broker on free localhost ports."""
    broker = LocalKafkaBroker.on_free_ports(tmp_path_factory.mktemp("kafka"), heap="384m")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_settings(kafka_broker: LocalKafkaBroker) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap_servers=kafka_broker.bootstrap_servers,
        kafka_request_timeout_ms=10_000,
    )


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Train and score on one thread: quick and steady even on a busy 2-core machine.

    Detector test modules use it with ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def topic_name() -> str:
    """A fresh topic name per test, so tests never see each other's messages."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """One local SparkSession for the whole run (2 cores, few shuffle partitions)."""
    from app.spark_session import build_spark_session

    settings = SparkSettings(
        spark_master="local[2]",
        spark_shuffle_partitions=2,
        checkpoint_location=Path(tmp_path_factory.mktemp("checkpoints")),
    )
    session = build_spark_session("tests", settings)
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny FCVAE models for two demo combos, trained and calibrated by the real CLI."""
    from app.train import main as train_main

    root = tmp_path_factory.mktemp("models")
    code = train_main(
        [
            "--detector",
            "fcvae",
            "--tiny",
            "--epochs",
            "3",
            "--no-progress",
            "--combos",
            "Accel_CMP",
            "Star_nopin",
            "--output-dir",
            str(root),
        ]
    )
    assert code == 0
    return root
