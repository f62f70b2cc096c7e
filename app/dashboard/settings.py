"""Settings of the dashboard process (environment variables, no prefix; README has the table)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app import PROJECT_ROOT

#: Four weeks of hours, twice: enough for a weekly pattern and the flags around it.
DEFAULT_HISTORY_HOURS = 24 * 28 * 2


class DashboardSettings(BaseSettings):
    """How the dashboard serves, what it keeps in memory and what ``/health`` checks.

    Kafka itself (bootstrap servers, topics, security) comes from ``KafkaSettings``.
    """

    model_config = SettingsConfigDict(
        extra="forbid", case_sensitive=False, env_nested_delimiter="__"
    )

    combo: str | None = Field(
        default=None,
        description="combo selected when a page opens (None: the first combo seen, alphabetically)",
    )
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8050, ge=1, le=65535)
    dashboard_history_hours: int = Field(
        default=DEFAULT_HISTORY_HOURS, ge=24, description="newest hours kept per combo"
    )
    dashboard_refresh_ms: int = Field(default=2000, ge=250, description="page refresh period")
    dashboard_threads: int = Field(default=4, ge=1, le=64, description="gunicorn worker threads")
    ground_truth_path: Path | None = Field(
        default=None,
        description="optional CSV (timestamp, combo, is_anomaly, event_id, anomaly_type) "
        "whose labelled hours are overlaid, marked as ground truth",
    )
    health_max_age_s: float = Field(
        default=120.0,
        gt=0,
        description="/health is unhealthy when neither a scored record nor a job heartbeat "
        "is newer than this",
    )
    model_path: Path = PROJECT_ROOT / "models"
