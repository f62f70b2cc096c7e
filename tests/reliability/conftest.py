"""Fixtures of the fault-injection suite (the session broker, Spark and models come from
``tests/conftest.py``)."""

from __future__ import annotations

import pytest

from app.config import KafkaSettings

from .helpers import fresh_topics


@pytest.fixture
def topics(kafka_settings: KafkaSettings) -> KafkaSettings:
    """Fresh input/scored/dead-letter/status topics (2 partitions) on the session broker."""
    return fresh_topics(kafka_settings, partitions=2)
