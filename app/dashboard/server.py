"""The dashboard process: Dash app factory, ``/health``, and the gunicorn entry point.

``python -m app.dashboard.server`` serves the app with gunicorn (one worker — the store
lives in it — with a few threads, bound to ``DASHBOARD_HOST:DASHBOARD_PORT``).  The worker
builds the store and starts the Kafka feed in ``load()``, i.e. after the fork, so no thread
crosses a ``fork()``; ``worker_exit`` stops the feed.

``/health`` rule
----------------
The response is JSON (kafka, freshness, job heartbeat, models, counters, and ``reasons``).

* **unhealthy** (HTTP 503) when any of:

  - Kafka is unreachable: the feed has not completed an offsets round trip with the
    broker in the last ``KAFKA_STALE_S`` seconds (or never has);
  - no model directory at all: neither ``MODEL_PATH/fcvae/<combo>/meta.json`` nor
    ``MODEL_PATH/vaegan/<combo>/meta.json`` exists (with readable JSON) for any combo;
  - the pipeline shows no life: the newest of (last scored record's Kafka timestamp,
    last job heartbeat's ``sent_at``, the dashboard's own start — a grace period) is
    older than ``HEALTH_MAX_AGE_S``.

* **degraded** (HTTP 200) when none of the above holds but: no job heartbeat was seen,
  the newest one is older than ``HEALTH_MAX_AGE_S``, or its state is not ``running``; or
  no scored record has arrived yet.  Old scored records alone do not degrade: with real
  hourly data the newest record is normally up to an hour old while the job's heartbeat
  (every few seconds) proves it is alive.
* **ok** (HTTP 200) otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from dash import Dash
from flask import Response
from gunicorn.app.base import BaseApplication

from app.config import KafkaSettings
from app.dashboard import callbacks, layout, queries
from app.dashboard.settings import DashboardSettings
from app.dashboard.store import KafkaFeed, ScoredStore

log = logging.getLogger(__name__)

#: Kafka counts as unreachable when the feed's last successful round trip is older than this.
KAFKA_STALE_S = 20.0


def assess_health(
    *,
    now: float,
    max_age_s: float,
    kafka_connected: bool,
    models: Mapping[str, list[str]],
    started_at: float,
    last_message_at: float | None,
    last_heartbeat_at: float | None,
    job_state: str | None,
) -> tuple[str, list[str]]:
    """``("ok" | "degraded" | "unhealthy", reasons)`` by the rule in the module docstring.

    Examples
    --------
    >>> assess_health(now=100.0, max_age_s=60, kafka_connected=True, models={"fcvae": ["A"]},
    ...               started_at=0.0, last_message_at=90.0, last_heartbeat_at=95.0,
    ...               job_state="running")
    ('ok', [])
    >>> assess_health(now=100.0, max_age_s=60, kafka_connected=False, models={"fcvae": []},
    ...               started_at=0.0, last_message_at=None, last_heartbeat_at=None,
    ...               job_state=None)[0]
    'unhealthy'
    """
    unhealthy: list[str] = []
    degraded: list[str] = []
    if not kafka_connected:
        unhealthy.append("Kafka is unreachable")
    if not any(models.values()):
        unhealthy.append("no model directory (fcvae/<combo>/meta.json or vaegan/<combo>/meta.json)")
    newest = max(t for t in (last_message_at, last_heartbeat_at, started_at) if t is not None)
    if now - newest > max_age_s:
        unhealthy.append(
            f"no scored record and no job heartbeat for {now - newest:.0f}s (> {max_age_s:.0f}s)"
        )
    if last_heartbeat_at is None:
        degraded.append("no job heartbeat seen yet")
    elif now - last_heartbeat_at > max_age_s:
        degraded.append(f"job heartbeat is {now - last_heartbeat_at:.0f}s old")
    elif job_state not in (None, "running"):
        degraded.append(f"job state is {job_state!r}")
    if last_message_at is None:
        degraded.append("no scored record yet")
    if unhealthy:
        return "unhealthy", unhealthy + degraded
    return ("degraded", degraded) if degraded else ("ok", [])


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 3)


def health_report(store: ScoredStore, settings: DashboardSettings) -> tuple[dict[str, Any], int]:
    """The ``/health`` body and its HTTP status code."""
    now = store.now()
    kafka = store.kafka_state()
    fresh = store.freshness()
    heartbeat = store.heartbeat()
    models, broken = queries.find_models(settings.model_path)
    connected = (
        kafka.connected and kafka.last_ok_at is not None and now - kafka.last_ok_at <= KAFKA_STALE_S
    )
    status, reasons = assess_health(
        now=now,
        max_age_s=settings.health_max_age_s,
        kafka_connected=connected,
        models=models,
        started_at=fresh["started_at"] or now,
        last_message_at=fresh["last_message_at"],
        last_heartbeat_at=fresh["last_heartbeat_at"],
        job_state=(heartbeat or {}).get("state"),
    )
    body = {
        "status": status,
        "reasons": reasons,
        "kafka": {
            "connected": connected,
            "bootstrap_servers": kafka.bootstrap_servers,
            "scored_topic": kafka.scored_topic,
            "status_topic": kafka.status_topic,
            "partitions": kafka.partitions,
            "consumer_lag": kafka.lag,
            "last_ok_age_s": _age(now, kafka.last_ok_at),
            "reconnects": kafka.reconnects,
            "last_error": kafka.last_error,
        },
        "freshness": {
            "last_message_age_s": _age(now, fresh["last_message_at"]),
            "last_received_age_s": _age(now, fresh["last_received_at"]),
            "last_heartbeat_age_s": _age(now, fresh["last_heartbeat_at"]),
            "max_age_s": settings.health_max_age_s,
            "uptime_s": _age(now, fresh["started_at"]),
        },
        "job": heartbeat,
        "models": models,
        "model_path": str(settings.model_path),
        "models_unreadable": broken,
        "counters": store.counters(),
    }
    return body, 503 if status == "unhealthy" else 200


def create_app(
    settings: DashboardSettings, store: ScoredStore, truth: pd.DataFrame | None = None
) -> Dash:
    """The Dash app (and its Flask ``/health`` route) over ``store``.

    ``truth`` is the ground-truth overlay; when None and ``GROUND_TRUTH_PATH`` is set, the
    file is read here.
    """
    if truth is None and settings.ground_truth_path is not None:
        truth = queries.read_ground_truth(settings.ground_truth_path)
    app = Dash(
        __name__,
        title="Transaction anomalies",
        update_title=None,  # type: ignore[arg-type]  # None = no "Updating..." title
        serve_locally=True,
        suppress_callback_exceptions=False,
    )

    def page() -> Any:
        combos = store.combos()
        kafka = store.kafka_state()
        return layout.build_layout(
            combos=combos,
            selected=queries.default_combo(combos, settings.combo),
            refresh_ms=settings.dashboard_refresh_ms,
            subtitle=f"live from Kafka topic {kafka.scored_topic or '?'}"
            + (" · ground truth overlay on" if truth is not None else ""),
            summary=callbacks.header_summary(store),
            pipeline=callbacks.pipeline_summary(store, settings, truth),
        )

    app.layout = page
    callbacks.register_callbacks(app, store, settings, truth)

    @app.server.route("/health")
    def health() -> Response:
        body, code = health_report(store, settings)
        return Response(json.dumps(body, default=str), status=code, mimetype="application/json")

    return app


# -- gunicorn ----------------------------------------------------------------------------------


class DashboardServer(BaseApplication):  # type: ignore[misc]
    """Runs the dashboard under gunicorn: 1 worker (the store lives in it), a few threads."""

    def __init__(
        self,
        settings: DashboardSettings,
        kafka: KafkaSettings,
        truth: pd.DataFrame | None,
        log_level: str,
    ) -> None:
        self.settings, self.kafka, self.truth, self.log_level = settings, kafka, truth, log_level
        self.feed: KafkaFeed | None = None
        super().__init__(prog="python -m app.dashboard.server")

    def load_config(self) -> None:
        options: dict[str, Any] = {
            "bind": [f"{self.settings.dashboard_host}:{self.settings.dashboard_port}"],
            "workers": 1,
            "worker_class": "gthread",
            "threads": self.settings.dashboard_threads,
            "timeout": 60,
            "graceful_timeout": 10,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": self.log_level.lower(),
            "proc_name": "txn-anomaly-dashboard",
            "control_socket_disable": True,
            "worker_exit": self._worker_exit,
        }
        for key, value in options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Callable[..., Any]:
        """Runs in the worker after the fork: build the store, start the feed, build the app."""
        store = ScoredStore(self.settings.dashboard_history_hours)
        self.feed = KafkaFeed(self.kafka, store)
        self.feed.start()
        app = create_app(self.settings, store, self.truth)
        log.info(
            "dashboard serving on http://%s:%d (history %d h per combo)",
            self.settings.dashboard_host,
            self.settings.dashboard_port,
            self.settings.dashboard_history_hours,
        )
        return app.server  # type: ignore[no-any-return]

    def _worker_exit(self, server: Any, worker: Any) -> None:
        if self.feed is not None:
            self.feed.stop(timeout_s=5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.dashboard.server",
        description=(
            "Serve the live anomaly dashboard with gunicorn. It replays the scored topic from "
            "the beginning, then follows it and the job's status topic; /health reports Kafka, "
            "freshness, the job heartbeat and the model directories (503 when unhealthy)."
        ),
        epilog=(
            "Environment: KAFKA_BOOTSTRAP_SERVERS, KAFKA_SCORED_TOPIC, KAFKA_STATUS_TOPIC (and "
            "the other KAFKA_* security settings), COMBO, DASHBOARD_HOST, DASHBOARD_PORT, "
            "DASHBOARD_HISTORY_HOURS, DASHBOARD_REFRESH_MS, DASHBOARD_THREADS, "
            "GROUND_TRUTH_PATH, HEALTH_MAX_AGE_S, MODEL_PATH, LOG_LEVEL. The options above "
            "override them."
        ),
    )
    parser.add_argument("--host", help="bind address (DASHBOARD_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (DASHBOARD_PORT, default 8050)")
    parser.add_argument("--combo", help="combo selected on page load (COMBO)")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        help="dataset CSV whose labels are overlaid (GROUND_TRUTH_PATH)",
    )
    parser.add_argument("--threads", type=int, help="gunicorn worker threads (DASHBOARD_THREADS)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING ... (LOG_LEVEL, default INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    if logging.getLogger().level > logging.DEBUG:
        # kafka-python logs every refused connection while the broker is away; the feed
        # reports the outage itself (one warning per reconnection attempt, backing off).
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    overrides = {
        key: value
        for key, value in {
            "dashboard_host": args.host,
            "dashboard_port": args.port,
            "combo": args.combo,
            "ground_truth_path": args.ground_truth,
            "dashboard_threads": args.threads,
        }.items()
        if value is not None
    }
    settings = DashboardSettings(**overrides)
    kafka = KafkaSettings()
    truth = None
    if settings.ground_truth_path is not None:
        try:
            truth = queries.read_ground_truth(settings.ground_truth_path)
        except (OSError, ValueError) as exc:
            log.error("cannot read GROUND_TRUTH_PATH=%s: %s", settings.ground_truth_path, exc)
            return 2
        log.info(
            "ground-truth overlay: %d labelled hours from %s",
            len(truth),
            settings.ground_truth_path,
        )
    level = logging.getLevelName(logging.getLogger().level)
    DashboardServer(settings, kafka, truth, level if isinstance(level, str) else "INFO").run()
    return 0


if __name__ == "__main__":
    # Run the imported module, so that loggers and classes carry their real module name.
    from app.dashboard import server

    sys.exit(server.main())
