"""`python -m app.kafka_local up/down` (what `make kafka-up` / `make kafka-down` run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import BrokerSettings
from app.kafka_io import broker_is_ready
from app.kafka_local import LocalKafkaBroker, free_port, port_is_open

pytestmark = pytest.mark.integration


def _cli(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.kafka_local", action],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_up_down_leaves_no_process(tmp_path: Path) -> None:
    port, controller = free_port(), free_port()
    env = dict(
        os.environ,
        KAFKA_PORT=str(port),
        KAFKA_CONTROLLER_PORT=str(controller),
        KAFKA_DATA_DIR=str(tmp_path / "kafka"),
    )
    up = _cli("up", env)
    broker = LocalKafkaBroker(
        BrokerSettings(
            kafka_port=port, kafka_controller_port=controller, kafka_data_dir=tmp_path / "kafka"
        )
    )
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == f"127.0.0.1:{port}"
        pid = broker.running_pid()
        assert pid is not None
        assert broker_is_ready(f"127.0.0.1:{port}")
        assert _cli("status", env).returncode == 0
        # A second `up` finds the running broker instead of starting another.
        assert _cli("up", env).returncode == 0
        assert broker.running_pid() == pid
    finally:
        down = _cli("down", env)
    assert down.returncode == 0, down.stderr
    assert broker.running_pid() is None
    assert not port_is_open("127.0.0.1", port)
    assert not Path(f"/proc/{pid}").exists()
    assert _cli("status", env).returncode == 3


def test_port_in_use_gives_clear_error(kafka_broker: LocalKafkaBroker, tmp_path: Path) -> None:
    taken = kafka_broker.settings.kafka_port
    env = dict(
        os.environ,
        KAFKA_PORT=str(taken),
        KAFKA_CONTROLLER_PORT=str(free_port()),
        KAFKA_DATA_DIR=str(tmp_path / "other"),
    )
    result = _cli("up", env)
    assert result.returncode == 1
    assert f"127.0.0.1:{taken} is already in use" in result.stderr


def test_storage_formats_with_a_cluster_id_that_starts_with_a_dash(tmp_path: Path) -> None:
    """Random ids are URL-safe base64: 1 in 64 starts with "-" (once read as an option)."""
    broker = LocalKafkaBroker.on_free_ports(tmp_path / "kafka")
    broker.format_storage(broker.write_config(), cluster_id="-dashFirstAbcdEfghIjklM")
    meta = (tmp_path / "kafka" / "data" / "meta.properties").read_text()
    assert "cluster.id=-dashFirstAbcdEfghIjklM" in meta
