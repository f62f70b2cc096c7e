"""A dashboard that dies (``kill -9``) rebuilds the same view from Kafka when it restarts.

The dashboard keeps its history in memory only; on start its feed replays the scored topic
from the beginning (no consumer group, nothing committed) and reads the newest heartbeat
of the status topic.  So a restarted dashboard must report exactly the counters it had
before: messages, duplicates (at-least-once re-writes collapse to one hour), invalid
records, hours per status, flagged hours, and the job's heartbeat.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from app.config import KafkaSettings
from app.contracts import utc_now_iso
from app.kafka_local import free_port

from .helpers import hour_iso, kill_group, send, service_env, start, tail, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

HOURS = 30


def _records() -> list[dict[str, Any]]:
    out = []
    for combo in ("Accel_CMP", "Star_nopin"):
        for i in range(HOURS):
            if i == 12:
                out.append({"combo": combo, "hour": hour_iso(i), "status": "missing"})
                continue
            status = "warming_up" if i < 23 else "scored"
            record: dict[str, Any] = {
                "combo": combo,
                "hour": hour_iso(i),
                "status": status,
                "count": 100.0 + i,
            }
            if status == "scored":
                record |= {"score": 0.5 + (i == 27) * 5, "threshold": 2.5, "is_anomaly": i == 27}
            out.append(record)
    return out


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _ready(port: int, messages: int) -> dict[str, Any] | None:
    try:
        _, body = _health(port)
    except (OSError, ValueError):
        return None  # not listening yet
    counters = body["counters"]
    if body["kafka"]["connected"] and counters["messages_received"] == messages and body["job"]:
        return body
    return None


def test_restarted_dashboard_rebuilds_the_same_view_from_the_scored_topic(
    topics: KafkaSettings, tiny_models: Path, tmp_path: Path
) -> None:
    records = _records()
    rewrites = [records[30], records[55]]  # the sink's at-least-once re-writes
    messages = [(r["combo"].encode(), json.dumps(r).encode()) for r in records + rewrites]
    messages.append((b"Accel_CMP", b"{not json"))  # counted as invalid, ignored
    send(topics, topics.kafka_scored_topic, messages)
    heartbeat = {"kind": "job_heartbeat", "state": "running", "sent_at": utc_now_iso()}
    send(topics, topics.kafka_status_topic, [(b"job", json.dumps(heartbeat).encode())])

    port = free_port()
    env = service_env(topics, DASHBOARD_PORT=str(port), MODEL_PATH=tiny_models)
    bodies = []
    for run in (1, 2):
        log = tmp_path / f"dashboard-{run}.log"
        proc = start("app.dashboard.server", env, log)
        try:
            body = wait_for(lambda: _ready(port, len(messages)), 60, f"the view:\n{tail(log)}", 0.5)
            code, body = _health(port)
            assert code == 200, body
            bodies.append(body)
        finally:
            kill_group(proc)  # SIGKILL: no clean shutdown, nothing saved anywhere

    before, after = bodies
    assert before["counters"] == after["counters"]
    counters = after["counters"]
    assert counters["messages_received"] == len(messages)
    assert counters["duplicates"] == len(rewrites)
    assert counters["invalid"] == 1
    assert counters["combos"] == 2
    assert counters["hours"] == 2 * HOURS
    assert counters["missing"] == 2
    assert counters["warming_up"] == 2 * 22
    assert counters["scored"] == 2 * (HOURS - 23)
    assert counters["flagged"] == 2
    assert before["job"] == after["job"] == heartbeat
    assert after["models"]["fcvae"] == ["Accel_CMP", "Star_nopin"]
