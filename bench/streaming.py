"""End-to-end streaming benchmarks: Kafka input topic → Spark job → scored topic.

Everything runs on this machine: a Kafka broker started here (free ports, temp dir), an
in-process SparkSession (``local[2]``) and the job's own ``build_query``. Each scenario gets
fresh topics and a fresh checkpoint.

* **Throughput** (``trigger(availableNow=True)``): for each scenario the input topic is
  pre-loaded with ``W − 1`` warm-up hours per combo (state only, nothing scored), the query
  drains it, then ``K`` more hours per combo are pre-loaded (every one a full window, so every
  one is scored) and the query is run again on the same checkpoint: that run's rows per second
  (messages over the wall time from ``start()`` to termination, and over the query progress's
  ``triggerExecution``) is the steady throughput.
* **Latency** (``trigger(processingTime=1000 ms)``, the job's default): the four demo combos
  with the shipped models, warmed up, then a steady 100 messages/s for 60 s;
  ``scored_at − produced_at`` of every scored record (and the scored record's Kafka timestamp
  − ``produced_at``). The dashboard runs as a subprocess on the scored topic meanwhile.
* **Memory**: VmHWM of the broker, the Spark driver JVM, the Spark Python workers, this
  (driver) process and the dashboard, sampled every 0.5 s from ``/proc``.

Synthetic combos need models: a temporary ``MODEL_PATH`` whose every combo directory is a
symlink to one real artifact directory (``Accel_CMP``), plus an ``ensemble.json`` entry per
combo. Two model sets are used (the results name them):

* ``shipped``: the shipped ensemble (FCVAE W=168 + 4 reference weeks + VAE+GAN W=24): 839
  hours of warm-up per combo, so used for 1 and 100 combos;
* ``tiny_w24``: an FCVAE with the project's tiny test parameters and W=24, trained here on the
  fly (``python -m app.train --detector fcvae --tiny --window 24``) and used with
  ``DETECTOR=fcvae``, for 1, 100 and 10,000 combos (VAE+GAN-only bundles are not possible: the
  registry always loads and scores the FCVAE, and a bundle's window is the longest of its
  detectors').
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import REPO_ROOT, CpuWindow, RssSampler, log, proc_cmdline, summarise

SOURCE_COMBO = "Accel_CMP"
DEMO_COMBOS = ("Accel_CMP", "Accel_nopin", "Star_CMP", "Star_nopin")
SHUFFLE_PARTITIONS = 4
KAFKA_PARTITIONS = 4
TRIGGER_MS = 1000


@dataclass
class Scenario:
    name: str
    models: str  # "shipped" or "tiny_w24"
    combos: int
    steady_hours: list[int]  # hours per combo of each steady run after the warm-up
    notes: str = ""


@dataclass
class ModelSet:
    name: str
    root: Path
    detector: str
    window: int
    description: str
    names: list[str] = field(default_factory=list)


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("shipped_1", "shipped", 1, [100]),
            Scenario("tiny_100", "tiny_w24", 100, [5]),
            Scenario("tiny_500", "tiny_w24", 500, [2]),
        ]
    return [
        Scenario("shipped_1", "shipped", 1, [2000]),
        Scenario("shipped_100", "shipped", 100, [48]),
        Scenario("tiny_1", "tiny_w24", 1, [4000]),
        Scenario("tiny_100", "tiny_w24", 100, [100]),
        Scenario(
            "tiny_10000",
            "tiny_w24",
            10_000,
            [3, 3],
            "steady run 1 loads every combo's model on first use in the Python workers; "
            "run 2 finds them cached (when a task lands on a worker that has them)",
        ),
    ]


# --- models ---------------------------------------------------------------------------------


def split_combos(quick: bool) -> int:
    """Combos of the Python-side split of one micro-batch."""
    return 10 if quick else 100


def combo_names(n: int) -> list[str]:
    return [f"bench_{i:05d}" for i in range(n)]


def synthetic_model_root(
    root: Path, names: list[str], source_root: Path, detectors: tuple[str, ...]
) -> Path:
    """``root/<detector>/<name>`` → symlinks to ``source_root/<detector>/Accel_CMP``."""
    for det in detectors:
        (root / det).mkdir(parents=True, exist_ok=True)
        target = (source_root / det / SOURCE_COMBO).resolve()
        for name in names:
            link = root / det / name
            if not link.exists():
                os.symlink(target, link, target_is_directory=True)
    ensemble_path = source_root / "ensemble.json"
    if "vaegan" in detectors and ensemble_path.exists():
        settings = json.loads(ensemble_path.read_text())
        entry = settings["combos"][SOURCE_COMBO]
        settings["combos"] = {name: entry for name in names}
        (root / "ensemble.json").write_text(json.dumps(settings))
    return root


def train_tiny_w24(out: Path) -> Path:
    """A tiny FCVAE with W=24 for the source combo, trained by the real CLI (a few seconds)."""
    cmd = [
        sys.executable,
        "-m",
        "app.train",
        "--detector",
        "fcvae",
        "--tiny",
        "--window",
        "24",
        "--epochs",
        "3",
        "--combos",
        SOURCE_COMBO,
        "--threads",
        "1",
        "--device",
        "cpu",
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"training the tiny W=24 FCVAE failed: {result.stderr[-2000:]}")
    return out


def bundle_load_ms(root: Path, names: list[str], detector: str, n: int = 200) -> float:
    """Milliseconds to load one combo's bundle from disk (what a worker pays per new combo)."""
    from app.registry import ModelRegistry

    registry = ModelRegistry(root, detector=detector)
    sample = names[:n]
    started = time.perf_counter()
    for name in sample:
        registry.bundle(name)
    return round((time.perf_counter() - started) / len(sample) * 1e3, 2)


# --- Kafka helpers --------------------------------------------------------------------------


def topic_size(kafka: Any, topic: str) -> int:
    """Records on ``topic`` (sum of end offsets; topics here are never compacted or trimmed)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.client_options(), enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        return int(sum(consumer.end_offsets(tps).values())) if tps else 0
    finally:
        consumer.close()


def read_topic(kafka: Any, topic: str, timeout_ms: int = 5_000) -> list[tuple[int, bytes]]:
    """Every record of ``topic``: (Kafka timestamp ms, value)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        **kafka.client_options(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=timeout_ms,
        max_poll_records=5_000,
    )
    try:
        return [(int(m.timestamp), bytes(m.value)) for m in consumer]
    finally:
        consumer.close()


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def iso_hour(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Feeder:
    """Sends hourly counts for many combos; each combo's hours continue where they stopped."""

    def __init__(self, kafka: Any, topic: str, names: list[str], first_hour: datetime) -> None:
        from kafka import KafkaProducer

        from app.data import load_counts
        from producer.producer import ProducerSettings

        frame = load_counts(ProducerSettings().data_path)
        series = frame.loc[frame["combo"] == SOURCE_COMBO, "value"]
        values = pd.Series(series.to_numpy()).interpolate(limit_direction="both")
        self.counts = values.round().astype(int).to_numpy()
        self.kafka, self.topic, self.names = kafka, topic, names
        self.keys = [n.encode() for n in names]
        self.first_hour = first_hour
        self.next_index = dict.fromkeys(names, 0)
        self.producer = KafkaProducer(
            **kafka.client_options(),
            acks=1,
            linger_ms=20,
            batch_size=512 * 1024,
        )

    def message(self, name: str, produced_at: str) -> bytes:
        i = self.next_index[name]
        self.next_index[name] = i + 1
        hour = iso_hour(self.first_hour + timedelta(hours=i))
        count = int(self.counts[i % len(self.counts)])
        return (
            f'{{"combo":"{name}","hour":"{hour}","count":{count},"produced_at":"{produced_at}"}}'
        ).encode()

    def send_hours(self, hours: int) -> tuple[int, float]:
        """``hours`` more hours for every combo, hour by hour; returns (messages, seconds)."""
        from app.contracts import utc_now_iso

        started = time.perf_counter()
        sent = 0
        for _ in range(hours):
            now = utc_now_iso()
            for name, key in zip(self.names, self.keys, strict=True):
                self.producer.send(self.topic, key=key, value=self.message(name, now))
                sent += 1
        self.producer.flush()
        return sent, time.perf_counter() - started

    def send_one(self, name: str) -> None:
        from app.contracts import utc_now_iso

        value = self.message(name, utc_now_iso())
        self.producer.send(self.topic, key=name.encode(), value=value)

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


# --- queries --------------------------------------------------------------------------------


def _progress(query: Any) -> list[dict[str, Any]]:
    return [json.loads(p.json) for p in query.recentProgress]


def _batch_summary(p: dict[str, Any]) -> dict[str, Any]:
    state = (p.get("stateOperators") or [{}])[0]
    return {
        "batchId": p.get("batchId"),
        "numInputRows": p.get("numInputRows"),
        "processedRowsPerSecond": round(float(p.get("processedRowsPerSecond") or 0.0), 1),
        "durationMs": p.get("durationMs"),
        "state_rows_total": state.get("numRowsTotal"),
        "state_rows_updated": state.get("numRowsUpdated"),
        "state_memory_mib": round((state.get("memoryUsedBytes") or 0) / 2**20, 2),
    }


def run_available_now(
    spark: Any,
    kafka: Any,
    settings: Any,
    checkpoint: Path,
    known: list[str],
    messages: int,
    timeout_s: float,
) -> dict[str, Any]:
    """Run the job's query with ``availableNow`` until it has drained the input topic.

    Rates are ``messages`` (what was sent) over time: Spark's ``numInputRows`` counts every
    message twice, because the plan reads the Kafka source in two branches (good records →
    state → scoring, bad records → dead letters) and sums both scans.
    """
    from app.streaming.job import build_query

    window = CpuWindow().start()
    started = time.perf_counter()
    query = build_query(spark, kafka, settings, str(checkpoint), known)
    finished = query.awaitTermination(timeout=timeout_s)
    wall = time.perf_counter() - started
    progress = _progress(query)
    if not finished:
        query.stop()
        raise TimeoutError(f"availableNow query still running after {timeout_s:.0f} s")
    if query.exception() is not None:
        raise RuntimeError(f"query failed: {query.exception()}")
    batches = [_batch_summary(p) for p in progress if p.get("numInputRows")]
    trigger_ms = sum((b["durationMs"] or {}).get("triggerExecution", 0) for b in batches)
    return {
        "rows": messages,
        "spark_num_input_rows": sum(b["numInputRows"] for b in batches),
        "wall_s": round(wall, 2),
        "rows_per_s_wall": round(messages / wall, 1) if wall else None,
        "rows_per_s_progress": round(messages / (trigger_ms / 1e3), 1) if trigger_ms else None,
        "batches": batches,
        "cpu": window.stop(),
    }


def run_scenario(
    spark: Any, kafka_base: Any, sc: Scenario, models: ModelSet, tmp: Path, quick: bool
) -> dict[str, Any]:
    from app.config import StreamSettings
    from app.kafka_io import create_topic_set

    names = combo_names(sc.combos)
    prefix = f"bench-{sc.name}-{uuid.uuid4().hex[:6]}"
    kafka = create_topic_set(kafka_base, prefix, KAFKA_PARTITIONS)
    settings = StreamSettings(
        model_path=models.root,
        detector=models.detector,
        window_size=models.window,
        trigger_available_now=True,
        torch_threads=1,
    )
    total_hours = models.window + sum(sc.steady_hours)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    feeder = Feeder(kafka, kafka.kafka_input_topic, names, now - timedelta(hours=total_hours + 2))
    checkpoint = tmp / f"checkpoint-{sc.name}"
    out: dict[str, Any] = {
        "scenario": sc.name,
        "models": models.name,
        "detector": models.detector,
        "window": models.window,
        "combos": sc.combos,
        "notes": sc.notes,
        "phases": [],
    }
    phases = [("warm-up", models.window - 1)] + [
        (f"steady-{i + 1}", h) for i, h in enumerate(sc.steady_hours)
    ]
    expected_out = 0
    try:
        for phase, hours in phases:
            sent, produce_s = feeder.send_hours(hours)
            expected_out += sent
            log(f"streaming {sc.name}: {phase}: {sent} messages sent in {produce_s:.1f} s")
            res = run_available_now(
                spark, kafka, settings, checkpoint, names, sent, timeout_s=300 if quick else 900
            )
            scored_total = topic_size(kafka, kafka.kafka_scored_topic)
            dead_total = topic_size(kafka, kafka.kafka_deadletter_topic)
            if scored_total != expected_out or dead_total:
                raise RuntimeError(
                    f"{phase}: scored topic has {scored_total} records, expected {expected_out} "
                    f"({dead_total} dead letters)"
                )
            res.update(
                {
                    "phase": phase,
                    "hours_per_combo": hours,
                    "messages": sent,
                    "scored_hours": sent if phase != "warm-up" else 0,
                    "produce_s": round(produce_s, 2),
                    "produce_msgs_per_s": round(sent / produce_s, 1),
                }
            )
            out["phases"].append(res)
            log(
                f"streaming {sc.name}: {phase}: {res['rows']} rows in {res['wall_s']} s "
                f"({res['rows_per_s_wall']} rows/s wall)"
            )
    finally:
        feeder.close()
    steady = [p for p in out["phases"] if p["phase"] != "warm-up"]
    best = max(steady, key=lambda p: p["rows_per_s_wall"] or 0.0)
    out["steady_rows_per_s_wall"] = best["rows_per_s_wall"]
    out["steady_rows_per_s_progress"] = best["rows_per_s_progress"]
    out["steady_phase"] = best["phase"]
    return out


# --- latency --------------------------------------------------------------------------------


def start_dashboard(kafka: Any, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.kafka_bootstrap_servers,
        "KAFKA_INPUT_TOPIC": kafka.kafka_input_topic,
        "KAFKA_SCORED_TOPIC": kafka.kafka_scored_topic,
        "KAFKA_DEADLETTER_TOPIC": kafka.kafka_deadletter_topic,
        "KAFKA_STATUS_TOPIC": kafka.kafka_status_topic,
        "MODEL_PATH": str(REPO_ROOT / "models"),
        "DASHBOARD_HOST": "127.0.0.1",
        "DASHBOARD_PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    with open(log_path, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "app.dashboard.server"],
            cwd=REPO_ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM to the group of a process this benchmark started; SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def run_latency(
    spark: Any,
    kafka_base: Any,
    tmp: Path,
    quick: bool,
    dashboard_holder: dict[str, int],
    rate: float = 100.0,
) -> dict[str, Any]:
    from app.config import StreamSettings
    from app.kafka_io import create_topic_set
    from app.kafka_local import free_port
    from app.registry import ModelRegistry
    from app.streaming.job import build_query

    duration = 15.0 if quick else 60.0
    settle = 5.0 if quick else 10.0  # sent at the same rate first, left out of the statistics
    combos = list(DEMO_COMBOS)
    registry = ModelRegistry(REPO_ROOT / "models")
    known = registry.check()
    window = registry.window()
    prefix = f"bench-latency-{uuid.uuid4().hex[:6]}"
    kafka = create_topic_set(kafka_base, prefix, KAFKA_PARTITIONS)
    settings = StreamSettings(
        model_path=REPO_ROOT / "models",
        detector="ensemble",
        window_size=window,
        trigger_interval_ms=TRIGGER_MS,
        torch_threads=1,
    )
    per_combo = int(rate * (settle + duration) / len(combos)) + 1
    warm_scored = 24
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first = now - timedelta(hours=window + warm_scored + per_combo + 2)
    feeder = Feeder(kafka, kafka.kafka_input_topic, combos, first)
    result: dict[str, Any] = {
        "models": "shipped (ensemble: FCVAE W=168 + 4 reference weeks + VAE+GAN W=24)",
        "combos": combos,
        "rate_msgs_per_s": rate,
        "duration_s": duration,
        "settle_s": settle,
        "trigger": f"processingTime {TRIGGER_MS} ms",
    }
    dashboard = None
    query = None
    try:
        warm_sent, _ = feeder.send_hours(window - 1 + warm_scored)
        query = build_query(spark, kafka, settings, str(tmp / "checkpoint-latency"), known)
        started = time.perf_counter()
        wait_until(
            lambda: topic_size(kafka, kafka.kafka_scored_topic) >= warm_sent,
            300,
            "the warm-up hours to be scored",
        )
        result["warmup"] = {
            "messages": warm_sent,
            "seconds_to_scored": round(time.perf_counter() - started, 2),
        }
        port = free_port()
        dashboard = start_dashboard(kafka, port, tmp / "dashboard.log")
        dashboard_holder["pid"] = dashboard.pid
        dash_started = time.perf_counter()
        wait_until(
            lambda: _answers(f"http://127.0.0.1:{port}/health"), 120, "the dashboard's /health"
        )
        result["dashboard_start_s"] = round(time.perf_counter() - dash_started, 2)
        log(f"streaming latency: warm; sending {rate:.0f} msgs/s for {duration:.0f} s")

        cpu = CpuWindow()
        timed_start: datetime | None = None
        t0 = time.perf_counter()
        sent = settle_sent = 0
        next_page = t0
        pages: list[float] = []
        while True:
            elapsed = time.perf_counter() - t0
            if elapsed >= settle + duration:
                break
            if timed_start is None and elapsed >= settle:
                timed_start, settle_sent = datetime.now(UTC), sent
                cpu.start()
            due = int(elapsed * rate) + 1
            while sent < due:
                feeder.send_one(combos[sent % len(combos)])
                sent += 1
            feeder.producer.flush()
            if time.perf_counter() >= next_page:  # a browser's page load every 5 s
                p0 = time.perf_counter()
                http_get(f"http://127.0.0.1:{port}/")
                pages.append(time.perf_counter() - p0)
                next_page += 5.0
            time.sleep(max(0.0, (sent / rate) - (time.perf_counter() - t0)))
        send_s = time.perf_counter() - t0 - settle
        total = warm_sent + sent
        assert timed_start is not None
        wait_until(
            lambda: topic_size(kafka, kafka.kafka_scored_topic) >= total,
            300,
            "every timed message to be scored",
        )
        drain_s = time.perf_counter() - t0 - settle - send_s
        result["cpu"] = cpu.stop()
        progress = _progress(query)
        query.stop()
        query = None

        status, body = http_get(f"http://127.0.0.1:{port}/health")
        try:
            health = json.loads(body)
        except ValueError:
            health = {"raw": body[:200].decode(errors="replace")}
        result["dashboard_health"] = {"http": status, "status": health.get("status")}
        result["dashboard_page_ms"] = summarise(pages)

        records = []
        for ts_ms, value in read_topic(kafka, kafka.kafka_scored_topic):
            rec = json.loads(value)
            rec["kafka_ts_ms"] = ts_ms
            records.append(rec)
        frame = pd.DataFrame(records)
        frame["produced"] = pd.to_datetime(frame["produced_at"], utc=True)
        frame["scored"] = pd.to_datetime(frame["scored_at"], utc=True)
        frame["kafka_ts"] = pd.to_datetime(frame["kafka_ts_ms"], unit="ms", utc=True)
        timed = frame[frame["produced"] >= pd.Timestamp(timed_start)]
        lat = (timed["scored"] - timed["produced"]).dt.total_seconds().to_numpy()
        lat_topic = (timed["kafka_ts"] - timed["produced"]).dt.total_seconds().to_numpy()
        half = len(timed) // 2
        order = np.argsort(timed["produced"].to_numpy())
        batches = [
            _batch_summary(p)
            for p in progress
            if p.get("numInputRows") and p.get("timestamp", "") >= timed_start.isoformat()[:19]
        ]
        durations = [b["durationMs"]["triggerExecution"] for b in batches]
        by_duration = sorted(batches, key=lambda b: b["durationMs"]["triggerExecution"])
        median_batch = by_duration[len(by_duration) // 2] if by_duration else None
        result.update(
            {
                "messages_sent": sent - settle_sent,
                "send_s": round(send_s, 2),
                "achieved_rate_msgs_per_s": round((sent - settle_sent) / send_s, 1),
                "drain_after_send_s": round(drain_s, 2),
                "records_in_timed_phase": len(timed),
                "statuses": timed["status"].value_counts().to_dict(),
                "scored_at_minus_produced_at_ms": summarise(list(lat)),
                "kafka_timestamp_minus_produced_at_ms": summarise(list(lat_topic)),
                "median_latency_first_half_ms": round(float(np.median(lat[order[:half]])) * 1e3, 1),
                "median_latency_second_half_ms": round(
                    float(np.median(lat[order[half:]])) * 1e3, 1
                ),
                "batches": len(batches),
                "batch_trigger_execution_ms": summarise([d / 1e3 for d in durations]),
                "batch_messages_median": float(np.median([b["numInputRows"] for b in batches])) / 2
                if batches
                else None,
                "median_batch": median_batch,
            }
        )
    finally:
        feeder.close()
        if query is not None:
            query.stop()
        if dashboard is not None:
            stop_process_group(dashboard)
    return result


def _answers(url: str) -> bool:
    try:
        http_get(url, timeout_s=2.0)
        return True
    except OSError:
        return False


# --- Python-side split of one micro-batch ---------------------------------------------------


class _FakeGroupState:
    """Just what the job's state function uses of Spark's ``GroupState``."""

    def __init__(self, row: tuple[Any, ...] | None) -> None:
        self.row = row

    @property
    def exists(self) -> bool:
        return self.row is not None

    @property
    def get(self) -> tuple[Any, ...]:
        assert self.row is not None
        return self.row

    def update(self, row: tuple[Any, ...]) -> None:
        self.row = row


def python_side_split(models: ModelSet, combos: int, hours: int) -> dict[str, Any]:
    """The job's own Python functions on one steady micro-batch, outside Spark.

    Runs ``_make_state_function`` (window state, per combo) and ``_make_score_function``
    (scoring, all combos of a partition in one call) from ``app.streaming.job`` on
    ``combos × hours`` new hours after a warm-up, without Spark, Arrow or Kafka: what is
    left of a micro-batch's ``addBatch`` time is Spark's own work (and worker start-up).
    """
    import torch

    from app.config import KafkaSettings, StreamSettings
    from app.contracts import utc_now_iso
    from app.streaming.job import _make_score_function, _make_state_function

    names = combo_names(combos)
    settings = StreamSettings(
        model_path=models.root, detector=models.detector, window_size=models.window
    )
    state_fn = _make_state_function(settings)
    score_fn = _make_score_function(settings, KafkaSettings())
    states: dict[str, _FakeGroupState] = {n: _FakeGroupState(None) for n in names}
    base = 480_000

    def frame(name: str, start: int, n: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "step": np.arange(base + start, base + start + n, dtype=np.int64),
                "count": np.full(n, 1000.0) + np.arange(n) % 24 * 10.0,
                "produced_at": utc_now_iso(),
                "raw": "{}",
                "src_partition": 0,
                "src_offset": np.arange(n, dtype=np.int64),
            }
        )

    for name in names:  # warm-up: W − 1 hours each
        list(state_fn((name,), iter([frame(name, 0, models.window - 1)]), states[name]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        emitted = [
            pdf
            for name in names
            for pdf in state_fn(
                (name,), iter([frame(name, models.window - 1, hours)]), states[name]
            )
        ]
        t_state = time.perf_counter() - t0
        emissions = pd.concat(emitted, ignore_index=True)
        t0 = time.perf_counter()
        out_first = pd.concat(list(score_fn(iter([emissions]))), ignore_index=True)
        t_score_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(score_fn(iter([emissions])))
        t_score_cached = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    rows = combos * hours
    return {
        "models": models.name,
        "combos": combos,
        "hours_per_combo": hours,
        "rows": rows,
        "scored": int((out_first["value"].str.contains('"status":"scored"')).sum()),
        "state_function_s": round(t_state, 3),
        "state_ms_per_combo": round(t_state / combos * 1e3, 3),
        "score_function_first_call_s": round(t_score_first, 3),
        "score_function_cached_s": round(t_score_cached, 3),
        "score_ms_per_combo_cached": round(t_score_cached / combos * 1e3, 2),
        "single_core_rows_per_s": round(rows / (t_state + t_score_cached), 1),
    }


# --- the benchmark --------------------------------------------------------------------------


def _classifier(dashboard: dict[str, int]) -> Callable[[int, str, list[int]], str | None]:
    me = os.getpid()

    def classify(pid: int, cmdline: str, ancestors: list[int]) -> str | None:
        dash = dashboard.get("pid")
        if dash is not None and (pid == dash or dash in ancestors):
            return "dashboard (gunicorn master + worker)"
        if pid == me:
            return "benchmark process (Python side of the Spark driver)"
        parent = proc_cmdline(ancestors[0]) if ancestors else ""
        for marker, role in (
            ("kafka.Kafka", "Kafka broker (JVM, -Xmx512m)"),
            (
                "org.apache.spark.deploy.SparkSubmit",
                "Spark driver JVM (local[2]: executors inside)",
            ),
        ):
            if marker in cmdline:
                # A JVM's child with the JVM's command line is a fork about to exec a
                # subprocess (the Python daemon): it shows the parent's pages, skip it.
                return None if marker in parent else role
        if "pyspark.daemon" in cmdline or "pyspark.worker" in cmdline:
            return "Spark Python workers (daemon + workers)"
        return None

    return classify


def run(quick: bool = False) -> dict[str, Any]:
    from app.config import KafkaSettings, SparkSettings
    from app.kafka_local import LocalKafkaBroker
    from app.spark_session import build_spark_session

    out: dict[str, Any] = {
        "spark": {
            "master": "local[2]",
            "shuffle_partitions": SHUFFLE_PARTITIONS,
            "kafka_partitions": KAFKA_PARTITIONS,
            "throughput_trigger": "availableNow (no maxOffsetsPerTrigger: one micro-batch)",
            "latency_trigger": f"processingTime {TRIGGER_MS} ms",
            "torch_threads_per_python_worker": 1,
            "python_worker_reuse": "Spark default (true)",
        },
        "scenarios": [],
        "errors": [],
    }
    dashboard_holder: dict[str, int] = {}
    # This benchmark's CPU window ends before the teardown: once the Spark JVM exits, its
    # Python daemon is orphaned and the workers' CPU time leaves this process tree, so a
    # window ending later would count it as other processes' load.
    cpu = CpuWindow().start()
    with (
        tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp_name,
        RssSampler(_classifier(dashboard_holder)) as sampler,
    ):
        tmp = Path(tmp_name)
        broker = LocalKafkaBroker.on_free_ports(tmp / "kafka", heap="512m")
        t0 = time.perf_counter()
        broker.start()
        out["broker_start_s"] = round(time.perf_counter() - t0, 2)
        spark = None
        try:
            kafka = KafkaSettings(
                kafka_bootstrap_servers=broker.bootstrap_servers, kafka_request_timeout_ms=30_000
            )
            t0 = time.perf_counter()
            spark = build_spark_session(
                "bench-streaming",
                SparkSettings(
                    spark_master="local[2]",
                    spark_shuffle_partitions=SHUFFLE_PARTITIONS,
                    checkpoint_location=tmp / "checkpoints",
                ),
            )
            out["spark_session_start_s"] = round(time.perf_counter() - t0, 2)

            log("streaming: latency run (shipped models, dashboard on)")
            try:
                out["latency"] = run_latency(spark, kafka, tmp, quick, dashboard_holder)
            except Exception as exc:
                out["errors"].append(f"latency: {type(exc).__name__}: {exc}")
                log(f"streaming latency failed: {exc}")
            out["memory_product_run"] = sampler.snapshot()

            model_sets = _model_sets(tmp, quick)
            out["model_sets"] = {
                k: {
                    "description": m.description,
                    "detector": m.detector,
                    "window": m.window,
                    "bundle_load_ms": bundle_load_ms(m.root, m.names, m.detector, 100),
                }
                for k, m in model_sets.items()
            }
            for sc in scenarios(quick):
                log(f"streaming: scenario {sc.name}")
                try:
                    out["scenarios"].append(
                        run_scenario(spark, kafka, sc, model_sets[sc.models], tmp, quick)
                    )
                except Exception as exc:
                    out["errors"].append(f"{sc.name}: {type(exc).__name__}: {exc}")
                    log(f"streaming {sc.name} failed: {exc}")
            out["python_side_split"] = []
            for key, hours in (("shipped", 5 if quick else 48), ("tiny_w24", 5 if quick else 100)):
                combos = split_combos(quick)
                try:
                    out["python_side_split"].append(
                        python_side_split(model_sets[key], combos, hours)
                    )
                except Exception as exc:
                    out["errors"].append(f"python_side_split {key}: {type(exc).__name__}: {exc}")
        finally:
            out["cpu"] = cpu.stop()
            out["memory_all_runs"] = sampler.snapshot()
            if spark is not None:
                spark.stop()
            broker.stop()
    if out["errors"] and not out["scenarios"] and "latency" not in out:
        raise RuntimeError("; ".join(out["errors"]))
    return out


def _model_sets(tmp: Path, quick: bool) -> dict[str, ModelSet]:
    from app.registry import ModelRegistry

    biggest = max(s.combos for s in scenarios(quick))
    names = combo_names(biggest)
    shipped_root = synthetic_model_root(
        tmp / "models-shipped",
        names[
            : max(
                split_combos(quick), *(s.combos for s in scenarios(quick) if s.models == "shipped")
            )
        ],
        REPO_ROOT / "models",
        ("fcvae", "vaegan"),
    )
    shipped_reg = ModelRegistry(shipped_root)
    tiny_src = train_tiny_w24(tmp / "tiny-src")
    tiny_root = synthetic_model_root(tmp / "models-tiny", names, tiny_src, ("fcvae",))
    tiny_reg = ModelRegistry(tiny_root, detector="fcvae")
    return {
        "shipped": ModelSet(
            "shipped",
            shipped_root,
            "ensemble",
            shipped_reg.bundle(names[0]).window,
            "shipped ensemble of Accel_CMP (FCVAE W=168 + 4 reference weeks, N_SAMPLES=16, "
            "10 MCMC rounds + "
            "VAE+GAN W=24), symlinked under every synthetic combo name",
            shipped_reg.combos(),
        ),
        "tiny_w24": ModelSet(
            "tiny_w24",
            tiny_root,
            "fcvae",
            tiny_reg.bundle(names[0]).window,
            "FCVAE with the tiny test parameters (hidden 48, 3 MCMC rounds, 8 samples), W=24, "
            "trained here for 3 epochs on Accel_CMP; DETECTOR=fcvae",
            tiny_reg.combos(),
        ),
    }
