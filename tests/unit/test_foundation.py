"""Checks on the project's own wiring: pins, jars, settings."""

from __future__ import annotations

import re
import tomllib

import pytest
from pydantic import ValidationError

from app import PROJECT_ROOT
from app.config import BrokerSettings, KafkaSettings
from app.errors import InfraError
from app.spark_session import kafka_jars


def _pinned(name: str) -> str:
    deps = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        if dep.split("==")[0].strip() == name:
            return dep.split("==")[1].strip()
    raise AssertionError(f"{name} is not pinned in pyproject.toml")


def test_spark_connector_matches_pinned_pyspark() -> None:
    import pyspark

    pom = (PROJECT_ROOT / "infra" / "spark" / "pom.xml").read_text()
    match = re.search(r"<spark.version>([^<]+)</spark.version>", pom)
    assert match is not None
    assert match.group(1) == _pinned("pyspark") == pyspark.__version__


def test_pandas_is_below_3_for_pyspark() -> None:
    assert int(_pinned("pandas").split(".")[0]) < 3


def test_kafka_jars_present_and_named(tmp_path) -> None:
    jars = kafka_jars(PROJECT_ROOT / "infra" / "spark" / "jars")
    assert any(j.name.startswith("spark-sql-kafka-0-10_2.13-") for j in jars)
    with pytest.raises(InfraError, match="make install"):
        kafka_jars(tmp_path)


def test_broker_heap_is_capped() -> None:
    assert BrokerSettings(kafka_heap="256m").kafka_heap == "256m"
    with pytest.raises(ValidationError, match="512m"):
        BrokerSettings(kafka_heap="1g")


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "10.0.0.1:9092,10.0.0.2:9092")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw")
    settings = KafkaSettings()
    assert settings.client_options()["bootstrap_servers"] == ["10.0.0.1:9092", "10.0.0.2:9092"]
    assert settings.client_options()["sasl_plain_username"] == "svc"
    spark = settings.spark_options()
    assert spark["kafka.security.protocol"] == "SASL_SSL"
    assert 'username="svc"' in spark["kafka.sasl.jaas.config"]


def test_services_bind_to_localhost_by_default() -> None:
    assert BrokerSettings().kafka_host == "127.0.0.1"
    assert KafkaSettings().kafka_bootstrap_servers.startswith("127.0.0.1:")
