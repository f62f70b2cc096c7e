"""Cluster mode on real parts: a Spark standalone master and worker, the job pointed at them.

The master and one worker are started with PySpark's own launcher (``bin/spark-class`` with
the standalone ``Master`` and ``Worker`` classes) on 127.0.0.1, the path the compose
``cluster`` profile and a real cluster take.  The real entry point
(``python -m app.streaming.job --available-now``) runs with
``SPARK_MASTER=spark://127.0.0.1:<port>`` on an input topic with three partitions; its
executors live in the worker's own work directory and get the models from the driver
(``SHIP_MODELS`` is on by default off ``local``), not from ``MODEL_PATH``.  The same input
is scored by the job in local mode (the session's ``local[2]`` SparkSession, as in the e2e
test), and every hour must come out identical: status, count, scores, threshold, flag.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest

from app.config import KafkaSettings
from app.kafka_io import ensure_product_topics
from tests.reliability.helpers import (
    SCORED_FIELDS,
    fresh_topics,
    job_env,
    kill_group,
    read_all,
    replay,
    run_job_available_now,
    send,
    start,
    tail,
    wait_for,
)

pytestmark = pytest.mark.integration

COMBOS = ["Accel_CMP", "Star_nopin"]
HOURS = 48  # per combo: 24 warm-up hours, then 24 of the test split
COMPARED = (*SCORED_FIELDS, "direction", "expected_low", "expected_high")
SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Standalone:
    """A running standalone master with one worker."""

    url: str
    work_dir: Path
    logs: list[Path]


def _launch(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPARK_")},
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_NO_DAEMONIZE": "1",
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(SPARK_CLASS), *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # one group: the worker's executors die with it
        )


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            state = json.load(r)
    except OSError:
        return 0
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    """Master + one worker (2 cores, 2 GB) from ``spark-class``; stopped afterwards."""
    root = tmp_path_factory.mktemp("standalone")
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    work_dir = root / "work"
    logs = [root / "master.log", root / "worker.log"]
    procs = [
        _launch(
            [
                "org.apache.spark.deploy.master.Master",
                *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)),
            ],
            logs[0],
            root,
        )
    ]
    try:
        procs.append(
            _launch(
                [
                    "org.apache.spark.deploy.worker.Worker",
                    url,
                    *("--host", "127.0.0.1", "--webui-port", str(worker_ui)),
                    *("--cores", "2", "--memory", "2g", "--work-dir", str(work_dir)),
                ],
                logs[1],
                root,
            )
        )
        wait_for(lambda: _alive_workers(ui) >= 1, 90, "a standalone worker to register")
        yield Standalone(url, work_dir, logs)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{tail(logs[0])}\n{tail(logs[1])}")
    finally:
        for proc in reversed(procs):
            kill_group(proc, 15)


def _by_hour(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["combo"], r["hour"]): r for r in records}


def test_cluster_mode_scores_exactly_as_local_mode(
    standalone: Standalone,
    spark,
    kafka_settings: KafkaSettings,
    tiny_models: Path,
    tmp_path: Path,
) -> None:
    # 1. One input topic with three partitions, filled by the real producer, plus a bad record.
    cluster = fresh_topics(kafka_settings, partitions=3)
    sent = sum(replay(cluster, combo, HOURS, warmup=24) for combo in COMBOS)
    send(cluster, cluster.kafka_input_topic, [(b"Accel_CMP", b"{not json")])

    # 2. The job's entry point on the standalone cluster; the models live in a directory the
    #    executors are never told about: they must come with the job.
    models = tmp_path / "driver-only-models"
    shutil.copytree(tiny_models, models)
    log = tmp_path / "job.log"
    env = job_env(cluster, models, tmp_path / "checkpoints")
    env.update(SPARK_MASTER=standalone.url, SPARK_SHUFFLE_PARTITIONS="3")
    proc = start("app.streaming.job", env, log, "--available-now", cwd=tmp_path)
    try:
        code = proc.wait(timeout=420)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        kill_group(proc)
    assert code == 0, f"job exited {code}\n{tail(log, 80)}\n{tail(standalone.logs[1])}"
    assert f"on {standalone.url}" in log.read_text(), tail(log)

    # The executors ran under the worker and scored from their own unpacked copy.
    unpacked = list(standalone.work_dir.glob("app-*/*/models-*.zip/fcvae/*/meta.json"))
    assert {p.parent.name for p in unpacked} == set(COMBOS), tail(log)

    # 3. The same input scored by the job in local mode (the session's local[2] Spark).
    local = cluster.model_copy(
        update={
            "kafka_scored_topic": f"{cluster.kafka_scored_topic}-local",
            "kafka_deadletter_topic": f"{cluster.kafka_deadletter_topic}-local",
        }
    )
    ensure_product_topics(local)
    run_job_available_now(spark, local, tiny_models, tmp_path / "local-ckpt")

    on_cluster = _by_hour(read_all(cluster, cluster.kafka_scored_topic))
    in_local = _by_hour(read_all(local, local.kafka_scored_topic))
    assert len(on_cluster) == sent  # every hour once (no failure, so no replayed batch)
    assert on_cluster.keys() == in_local.keys()
    statuses = {r["status"] for r in on_cluster.values()}
    assert "scored" in statuses, statuses
    for key, record in on_cluster.items():
        other = in_local[key]
        assert {f: record.get(f) for f in COMPARED} == {f: other.get(f) for f in COMPARED}, key
    assert sum(r["status"] == "scored" for r in on_cluster.values()) >= len(COMBOS) * 20

    dead = read_all(cluster, cluster.kafka_deadletter_topic)
    assert [d["reason"][:14] for d in dead] == ["malformed JSON"]
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(models)
