"""``make run``: the whole local stack in one process tree, stopped cleanly on Ctrl-C.

Starts, in order, each waiting for the one before to be healthy: the Kafka broker
(and the topics), then every service listed in ``SERVICES`` that exists in this
checkout (streaming job, dashboard, producer).  On Ctrl-C or SIGTERM it stops them in
reverse order — SIGTERM to each process group, SIGKILL after a grace period — so no
Java or Python process is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from app import PROJECT_ROOT
from app.config import BrokerSettings, KafkaSettings, SparkSettings
from app.errors import InfraError
from app.kafka_io import ensure_product_topics
from app.kafka_local import LocalKafkaBroker

log = logging.getLogger(__name__)


@dataclass
class Service:
    """A child process of the stack."""

    name: str
    module: str
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:  # the parent package is missing
            return False

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            env=env,
            start_new_session=True,
        )
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the service itself (it shuts its children down, e.g. Spark's JVM), then
        clear its process group; SIGKILL only what is still there after ``grace_s``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", self.name, grace_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Leftovers of the group (a JVM or Python worker whose parent died) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        log.info("stopped %s", self.name)


#: Services started after the broker, in order (modules that do not exist yet are skipped).
SERVICES = [
    Service("streaming job", "app.streaming.job"),
    Service("dashboard", "app.dashboard.server"),
    Service("producer", "producer.producer"),
]


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _dashboard_url() -> str:
    from app.dashboard.settings import DashboardSettings

    settings = DashboardSettings()
    host = "127.0.0.1" if settings.dashboard_host in ("0.0.0.0", "") else settings.dashboard_host
    return f"http://{host}:{settings.dashboard_port}"


def _health(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:  # 503 still carries the JSON
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def start_fresh(broker: LocalKafkaBroker) -> None:
    """Forget earlier runs: stop our broker, delete its data and the job's checkpoints.

    A demo replays the same hours every time; with old state the job would rightly
    dead-letter them as late, and the dashboard would replay the old run.
    """
    broker.stop()
    checkpoints = SparkSettings().checkpoint_location
    for path in (broker.data_dir, checkpoints):
        if path.exists():
            log.info("fresh start: removing %s", path)
            shutil.rmtree(path)


def run_stack(keep_broker: bool = False, fresh: bool = False) -> int:
    """Start everything, wait for Ctrl-C, stop everything; return an exit code."""
    started_at = time.monotonic()
    broker = LocalKafkaBroker(BrokerSettings())
    kafka = KafkaSettings()
    if fresh:
        start_fresh(broker)
    signal.signal(signal.SIGTERM, _raise_stop)
    started: list[Service] = []
    try:
        broker.start()
        ensure_product_topics(kafka)
        env = dict(os.environ)
        env.setdefault(
            "GROUND_TRUTH_PATH", str(PROJECT_ROOT / "data" / "synthetic_transactions.csv")
        )
        for service in SERVICES:
            if not service.available():
                log.warning(
                    "%s is not part of this checkout (%s); skipping it",
                    service.name,
                    service.module,
                )
                continue
            service.start(env)
            started.append(service)
        url = _dashboard_url()
        announced = first_scored = False
        log.info("stack starting: Kafka on %s; Ctrl-C stops everything", broker.bootstrap_servers)
        while True:
            for service in started:
                if service.proc is not None and service.proc.poll() is not None:
                    if service.name == "producer" and service.proc.returncode == 0:
                        log.info("producer finished its replay (LOOP_DATA=true replays forever)")
                        service.proc = None
                        continue
                    raise InfraError(f"{service.name} exited with code {service.proc.returncode}")
            if not (announced and first_scored):
                health = _health(url)
                if health is not None and not announced:
                    announced = True
                    log.info("dashboard is up: %s  (health: %s)", url, health.get("status"))
                    print(f"\n  Dashboard: {url}\n", flush=True)  # the command's answer
                scored = ((health or {}).get("counters") or {}).get("scored", 0)
                if scored and not first_scored:
                    first_scored = True
                    log.info(
                        "first scored hour on the dashboard %.1f s after `make run` started",
                        time.monotonic() - started_at,
                    )
            time.sleep(1.0)
    except (KeyboardInterrupt, _Stop):
        log.info("stopping the stack ...")
        return 0
    except InfraError as exc:
        log.error("%s", exc)
        return 1
    finally:
        for service in reversed(started):
            service.stop()
        if not keep_broker:
            broker.stop()


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging

    parser = argparse.ArgumentParser(
        prog="python -m app.stack",
        description="Run the whole local stack (what `make run` does): the Kafka broker, the "
        "streaming job, the dashboard and the producer. Ctrl-C stops all of them.",
    )
    parser.add_argument(
        "--keep-broker",
        action="store_true",
        help="leave the Kafka broker running on exit (stop it with make kafka-down)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start from empty Kafka data and checkpoints (what `make run` does: the demo "
        "replays the same hours every time)",
    )
    args = parser.parse_args(argv)
    setup_logging()
    return run_stack(keep_broker=args.keep_broker, fresh=args.fresh)


if __name__ == "__main__":
    sys.exit(main())
