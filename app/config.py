"""Settings, one pydantic-settings class per process.

Every knob is an environment variable with a sensible default; names carry no
prefix so that ``make run``, ``docker compose`` and a Spark cluster all read the
same ones (README has the table).  Only entry points build these objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app import PROJECT_ROOT
from app.catalog import ENSEMBLE, decision_names

_COMMON = SettingsConfigDict(extra="forbid", case_sensitive=False, env_nested_delimiter="__")


class KafkaSettings(BaseSettings):
    """How clients reach Kafka, and the topics the product uses."""

    model_config = _COMMON

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_input_topic: str = "transactions.hourly"
    kafka_scored_topic: str = "transactions.scored"
    kafka_deadletter_topic: str = "transactions.deadletter"
    kafka_status_topic: str = "transactions.status"
    kafka_partitions: int = Field(default=4, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1_000)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (security included)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers.split(","),
            "security_protocol": self.kafka_security_protocol,
            "request_timeout_ms": self.kafka_request_timeout_ms,
        }
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_ssl_cafile:
            options["ssl_cafile"] = self.kafka_ssl_cafile
        return options

    def spark_options(self) -> dict[str, str]:
        """Options for Spark's Kafka source and sink (``kafka.``-prefixed client settings)."""
        options = {
            "kafka.bootstrap.servers": self.kafka_bootstrap_servers,
            "kafka.security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            options["kafka.sasl.mechanism"] = self.kafka_sasl_mechanism
            if self.kafka_sasl_username is not None:
                module = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule"
                    if self.kafka_sasl_mechanism.upper().startswith("SCRAM")
                    else "org.apache.kafka.common.security.plain.PlainLoginModule"
                )
                options["kafka.sasl.jaas.config"] = (
                    f'{module} required username="{self.kafka_sasl_username}" '
                    f'password="{self.kafka_sasl_password or ""}";'
                )
        if self.kafka_ssl_cafile:
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.location"] = self.kafka_ssl_cafile
        return options


class BrokerSettings(BaseSettings):
    """The local single-node KRaft broker that ``make kafka-up`` and the tests start."""

    model_config = _COMMON

    kafka_host: str = "127.0.0.1"
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    kafka_data_dir: Path = PROJECT_ROOT / ".run" / "kafka"
    kafka_lib_dir: Path = PROJECT_ROOT / "infra" / "kafka" / "lib"
    kafka_heap: str = "512m"
    kafka_start_timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("kafka_heap")
    @classmethod
    def _heap_at_most_512m(cls, value: str) -> str:
        units = {"k": 1 / 1024, "m": 1, "g": 1024}
        text = value.strip().lower()
        if not text or text[-1] not in units or not text[:-1].isdigit():
            raise ValueError(f"KAFKA_HEAP must look like 256m or 1g, got {value!r}")
        if int(text[:-1]) * units[text[-1]] > 512:
            raise ValueError(f"KAFKA_HEAP is capped at 512m on this project, got {value!r}")
        return text


class SparkSettings(BaseSettings):
    """How the streaming job builds its SparkSession."""

    model_config = _COMMON

    spark_master: str = "local[*]"
    spark_jars_dir: Path = PROJECT_ROOT / "infra" / "spark" / "jars"
    spark_shuffle_partitions: int = Field(default=4, ge=1)
    spark_ui_enabled: bool = False
    spark_driver_memory: str = "1g"
    spark_local_ip: str = "127.0.0.1"
    checkpoint_location: Path = PROJECT_ROOT / ".run" / "checkpoints"


#: Longest run of missing hours a combo's window bridges (as NaN, masked by the models);
#: a longer gap resets the window and the combo warms up again (840 hours with the shipped
#: FCVAE), so one day of outage is bridged.
DEFAULT_MAX_GAP_HOURS = 24

#: An hour more than this many steps after its combo's newest accepted step is held until
#: the combo's next hour confirms the jump (a real outage) or refutes it (a bad timestamp:
#: dead-lettered ``too far ahead of this combo``); see ``app.streaming.state.advance``.
DEFAULT_MAX_AHEAD_STEPS = 3

#: The Kafka sink's ``kafka.max.request.size`` (the producer's limit on one request, and so
#: on one record), set explicitly; a dead letter's raw copy is bounded well below it.
SINK_MAX_REQUEST_BYTES = 1_048_576


class StreamSettings(BaseSettings):
    """The streaming job: models, windows, limits of the input contract, triggers."""

    model_config = _COMMON

    model_path: Path = PROJECT_ROOT / "models"
    detector: str = ENSEMBLE  # one of app.catalog.decision_names()
    window_size: int | None = Field(default=None, ge=2)  # None = the models' window
    max_gap_hours: int = Field(default=DEFAULT_MAX_GAP_HOURS, ge=0)
    n_samples: int | None = Field(default=None, ge=1)  # None = the value the model was trained with
    torch_threads: int = Field(default=1, ge=1)
    ship_models: bool | None = None  # None = when SPARK_MASTER is not local
    step_seconds: int | None = Field(default=None, ge=1)  # None = the models' step
    max_message_bytes: int = Field(default=10_000, ge=100)
    max_count: int = Field(default=1_000_000_000, ge=1)
    min_hour_epoch_s: int = 946_684_800  # 2000-01-01T00:00:00Z
    max_future_hours: int = Field(default=48, ge=0)
    max_ahead_steps: int = Field(default=DEFAULT_MAX_AHEAD_STEPS, ge=1)
    deadletter_max_raw_bytes: int = Field(
        default=65_536, ge=256, le=SINK_MAX_REQUEST_BYTES // 2
    )  # of JSON-escaped raw text in a dead letter (the rest: reason, length, SHA-256)
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    max_offsets_per_trigger: int | None = Field(default=None, ge=1)
    trigger_interval_ms: int = Field(default=1000, ge=0)
    trigger_available_now: bool = False

    @field_validator("detector")
    @classmethod
    def _known_decision(cls, value: str) -> str:
        if value not in decision_names():
            raise ValueError(f"DETECTOR={value!r}: choose one of {list(decision_names())}")
        return value

    def resolved_step_seconds(self) -> int:
        """The grid step in seconds: ``STEP_SECONDS``, else hourly until the job reads the
        models' own step (``ModelRegistry.step_seconds``)."""
        return int(self.step_seconds) if self.step_seconds is not None else 3600

    def max_gap_steps(self) -> int:
        """``MAX_GAP_HOURS`` in steps of the resolved step (the state rule counts steps)."""
        from app.timebase import TimeBase

        return TimeBase(self.resolved_step_seconds()).hours_to_steps(self.max_gap_hours)
