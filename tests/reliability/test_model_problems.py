"""Broken model directories stop the job at start-up, loudly; the dashboard reports them.

``python -m app.streaming.job`` loads every combo's models before it touches Kafka or
Spark (``ModelRegistry.check``).  A missing, corrupted or mismatched model directory must
make it exit non-zero within seconds, with one error line naming the problem, and before
it creates a topic, starts Spark or consumes a message.  The dashboard never loads
weights; its ``/health`` reports the model directories it can read, lists unreadable
``meta.json`` files, and is unhealthy (503) when there is no model directory at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from app import PROJECT_ROOT
from app.config import KafkaSettings
from app.kafka_local import free_port

from .helpers import fresh_topics, job_env, kill_group, service_env, start, tail, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


def _bad_json(models: Path) -> None:
    (models / "fcvae" / "Accel_CMP" / "meta.json").write_text('{"combo": "Accel_CMP", ')


def _truncated_weights(models: Path) -> None:
    weights = models / "fcvae" / "Accel_CMP" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:200])


def _missing_weights(models: Path) -> None:
    (models / "fcvae" / "Star_nopin" / "weights.pt").unlink()


def _other_detector(models: Path) -> None:
    meta = models / "fcvae" / "Accel_CMP" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "detector": "vaegan"}))


def _no_models(models: Path) -> None:
    shutil.rmtree(models)


CASES: dict[str, tuple[Callable[[Path], None], dict[str, str], str]] = {
    # name: (how the copy of the models is broken, extra environment, expected error text)
    "no model directory": (_no_models, {}, "no trained models under {models}/fcvae"),
    "meta.json not JSON": (
        _bad_json,
        {},
        "{models}/fcvae/Accel_CMP/meta.json is not valid JSON",
    ),
    "truncated weights.pt": (
        _truncated_weights,
        {},
        "{models}/fcvae/Accel_CMP/weights.pt cannot be loaded as state dicts",
    ),
    "weights.pt missing": (
        _missing_weights,
        {},
        "{models}/fcvae/Star_nopin/weights.pt is missing",
    ),
    "another detector's artifact": (
        _other_detector,
        {},
        "{models}/fcvae/Accel_CMP holds a 'vaegan' artifact, not 'fcvae'",
    ),
    "window mismatch": (
        lambda models: None,
        {"WINDOW_SIZE": "48"},
        "model for 'Accel_CMP' was trained with window 24, but WINDOW_SIZE=48",
    ),
}


@pytest.fixture
def broken_models(tiny_models: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(tiny_models, copy)
    return copy


@pytest.mark.parametrize("case", list(CASES))
def test_job_refuses_to_start_on_broken_models(
    case: str, broken_models: Path, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    breaker, extra, message = CASES[case]
    breaker(broken_models)
    topics = kafka_settings.model_copy(
        update={
            f"kafka_{kind}_topic": f"never-{tmp_path.name}-{kind}"
            for kind in ("input", "scored", "deadletter", "status")
        }
    )
    env = job_env(topics, broken_models, tmp_path / "ckpt", **extra)
    result = subprocess.run(
        [sys.executable, "-m", "app.streaming.job"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,  # a hang guard, not a timing: start-up is slow on a loaded machine
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    assert "cannot start: " + message.format(models=broken_models) in errors[0], output
    assert "Traceback" not in output
    # Nothing touched: no Spark session, no topic created, no checkpoint written.
    assert "SparkSession" not in output
    assert not (tmp_path / "ckpt").exists()
    admin = KafkaAdminClient(**kafka_settings.client_options())
    try:
        assert not [t for t in admin.list_topics() if t.startswith(f"never-{tmp_path.name}")]
    finally:
        admin.close()


def _health(port: int) -> tuple[int, dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None  # not listening yet


def _connected_health(
    kafka: KafkaSettings, models: Path, tmp_path: Path, name: str
) -> tuple[int, dict[str, Any]]:
    port = free_port()
    log = tmp_path / f"{name}.log"
    proc = start(
        "app.dashboard.server", service_env(kafka, DASHBOARD_PORT=port, MODEL_PATH=models), log
    )
    try:

        def connected() -> tuple[int, dict[str, Any]] | None:
            answer = _health(port)
            return answer if answer and answer[1]["kafka"]["connected"] else None

        return wait_for(connected, 60, f"/health with Kafka connected:\n{tail(log)}", 0.5)
    finally:
        kill_group(proc)


def test_dashboard_health_reports_missing_and_unreadable_models(
    kafka_settings: KafkaSettings, broken_models: Path, tmp_path: Path
) -> None:
    kafka = fresh_topics(kafka_settings, partitions=1)

    code, body = _connected_health(kafka, tmp_path / "no-models", tmp_path, "none")
    assert code == 503, body
    assert body["status"] == "unhealthy"
    assert any(r.startswith("no model directory") for r in body["reasons"]), body["reasons"]
    assert not any(r.startswith("Kafka") for r in body["reasons"]), body["reasons"]
    assert body["models"] == {"fcvae": [], "vaegan": []}

    _bad_json(broken_models)
    code, body = _connected_health(kafka, broken_models, tmp_path, "broken")
    assert body["models"]["fcvae"] == ["Star_nopin"]
    assert body["models_unreadable"] == [str(broken_models / "fcvae/Accel_CMP/meta.json")]
    assert not any(r.startswith("no model directory") for r in body["reasons"])
    assert code == 200, body  # one readable model: degraded at worst (no heartbeat yet)
