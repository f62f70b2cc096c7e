"""`make run` itself: ``python -m app.stack --fresh`` on the shipped models, its own broker and
ports, until the dashboard shows scored hours; then SIGINT stops every process.

The other stream tests build the query with tiny models and small batches; this one runs
the product as a user starts it (W = 168, the ensemble, the warm-up prefix arriving in one
burst), which once failed on its first micro-batch while every smaller test passed.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from app.kafka_local import free_port, port_is_open
from tests.reliability.helpers import kill_group, service_env, start, tail, wait_for

pytestmark = pytest.mark.integration


def _health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as exc:  # 503 (degraded) still carries the JSON
        return dict(json.loads(exc.read()))
    except (OSError, ValueError):
        return None


def test_make_run_scores_the_demo_and_stops_cleanly(kafka_settings, tmp_path: Path) -> None:
    kafka_port, controller, dashboard = free_port(), free_port(), free_port()
    env = service_env(
        kafka_settings,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka_port}",
        KAFKA_PORT=kafka_port,
        KAFKA_CONTROLLER_PORT=controller,
        KAFKA_DATA_DIR=tmp_path / "kafka",
        KAFKA_HEAP="384m",
        CHECKPOINT_LOCATION=tmp_path / "checkpoints",
        DASHBOARD_PORT=dashboard,
        MESSAGE_DELAY_SECONDS="0.2",
    )
    for name in ("KAFKA_INPUT_TOPIC", "KAFKA_SCORED_TOPIC", "KAFKA_DEADLETTER_TOPIC"):
        env.pop(name)  # the product's own topic names
    env.pop("KAFKA_STATUS_TOPIC")
    log = tmp_path / "stack.log"
    proc = start("app.stack", env, log, "--fresh")
    try:

        def scored() -> dict[str, Any] | None:
            assert proc.poll() is None, f"the stack exited early\n{tail(log, 60)}"
            health = _health(dashboard)
            counters = (health or {}).get("counters") or {}
            announced = "first scored hour on the dashboard" in log.read_text(errors="replace")
            ready = counters.get("scored", 0) >= 8 and counters.get("combos") == 4
            return counters if ready and announced else None

        counters = wait_for(scored, 240, "scored hours of 4 combos on the dashboard", interval_s=2)
        assert counters["invalid"] == 0
        assert "Traceback" not in log.read_text(errors="replace"), tail(log, 60)

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        assert proc.wait(timeout=90) == 0, tail(log, 40)
    finally:
        kill_group(proc)
    assert not port_is_open("127.0.0.1", kafka_port)
    assert not port_is_open("127.0.0.1", dashboard)
