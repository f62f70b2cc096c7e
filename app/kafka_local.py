"""A real single-node Apache Kafka broker (KRaft: broker + controller, no ZooKeeper).

The jars come from Maven Central (``infra/kafka/pom.xml``, fetched by ``make install``);
this module writes the server properties, formats the storage once, starts
``kafka.Kafka`` with at most 512 MB of heap, waits until it serves metadata, and
stops it cleanly.  ``make kafka-up`` / ``make kafka-down``, ``make run`` and the
test fixtures all use it, so the tests run the broker users run.

Usage::

    python -m app.kafka_local up      # start in the background, wait until ready
    python -m app.kafka_local status
    python -m app.kafka_local down    # SIGTERM, wait, SIGKILL only if it hangs
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.config import BrokerSettings
from app.errors import InfraError

log = logging.getLogger(__name__)

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = kafka: [%d] %p %m (%c)%n
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = error
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.console.ref = console
logger.kafka.name = kafka
logger.kafka.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = info
"""


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise InfraError("java not found: install a Java 17+ runtime (Kafka needs it)")
    return found


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalKafkaBroker:
    """One KRaft broker process, its properties and its data directory.

    Parameters
    ----------
    settings
        Host, ports, data directory, jar folder and heap (``BrokerSettings``).
    """

    settings: BrokerSettings

    @classmethod
    def on_free_ports(cls, data_dir: Path, heap: str = "512m") -> LocalKafkaBroker:
        """A broker (not started) on two free localhost ports, with its data in ``data_dir``
        (tests and benchmarks)."""
        return cls(
            BrokerSettings(
                kafka_port=free_port(),
                kafka_controller_port=free_port(),
                kafka_data_dir=data_dir,
                kafka_heap=heap,
            )
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.settings.kafka_host}:{self.settings.kafka_port}"

    @property
    def data_dir(self) -> Path:
        return self.settings.kafka_data_dir

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    def classpath(self) -> str:
        lib = self.settings.kafka_lib_dir
        if not lib.is_dir() or not any(lib.glob("kafka_2.13-*.jar")):
            raise InfraError(
                f"Kafka jars not found in {lib}: run `make install` (it runs "
                "`mvn -f infra/kafka/pom.xml dependency:copy-dependencies`)"
            )
        return str(lib / "*")

    def write_config(self) -> Path:
        """Write ``server.properties`` and the Log4j 2 configuration; return the former."""
        s = self.settings
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.kafka_host}:{s.kafka_controller_port}",
            "listeners": (
                f"PLAINTEXT://{s.kafka_host}:{s.kafka_port},"
                f"CONTROLLER://{s.kafka_host}:{s.kafka_controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{s.kafka_host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
            "message.max.bytes": "1048588",
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(log_file=self.log_file))
        return path

    def _java_command(self, main_class: str, *args: str) -> list[str]:
        return [
            _java(),
            f"-Xmx{self.settings.kafka_heap}",
            f"-Xms{min(256, _megabytes(self.settings.kafka_heap))}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            self.classpath(),
            main_class,
            *args,
        ]

    def format_storage(self, config: Path, cluster_id: str | None = None) -> None:
        """Format the KRaft storage once (a no-op when ``meta.properties`` exists).

        ``cluster_id`` defaults to a random one (22 URL-safe base64 characters, which may
        start with ``-``: it is passed as ``--cluster-id=<id>`` so that it is never read as
        an option).
        """
        if (self.data_dir / "data" / "meta.properties").exists():
            return
        if cluster_id is None:
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        cmd = self._java_command(
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            f"--config={config}",
        )
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise InfraError(
                f"formatting Kafka storage in {self.data_dir} failed "
                f"(exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
            )

    def running_pid(self) -> int | None:
        """The broker's pid if our pid file names a live process."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A zombie child (exited, not yet reaped) is not running.
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return None
        return pid

    def start(self) -> None:
        """Start the broker in the background and block until it serves metadata."""
        s = self.settings
        if self.running_pid() is not None:
            log.info(
                "Kafka broker already running (pid %s) on %s",
                self.running_pid(),
                self.bootstrap_servers,
            )
            self.wait_ready()
            return
        for port in (s.kafka_port, s.kafka_controller_port):
            if port_is_open(s.kafka_host, port):
                raise InfraError(
                    f"port {s.kafka_host}:{port} is already in use by another process: stop it "
                    "or choose other ports with KAFKA_PORT / KAFKA_CONTROLLER_PORT"
                )
        config = self.write_config()
        self.format_storage(config)
        stdout = open(self.data_dir / "logs" / "stdout.log", "ab")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                self._java_command("kafka.Kafka", str(config)),
                stdout=stdout,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            stdout.close()
        self.pid_file.write_text(str(proc.pid))
        log.info(
            "Kafka broker starting (pid %d) on %s, data in %s",
            proc.pid,
            self.bootstrap_servers,
            self.data_dir,
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        """Block until the broker answers a metadata request, or raise ``InfraError``."""
        from app.kafka_io import broker_is_ready

        deadline = time.monotonic() + self.settings.kafka_start_timeout_s
        while time.monotonic() < deadline:
            if self.running_pid() is None:
                raise InfraError(f"Kafka broker exited during start-up: {self._log_tail()}")
            if port_is_open(self.settings.kafka_host, self.settings.kafka_port) and (
                broker_is_ready(self.bootstrap_servers)
            ):
                log.info("Kafka broker ready on %s", self.bootstrap_servers)
                return
            time.sleep(0.3)
        raise InfraError(
            f"Kafka broker not ready on {self.bootstrap_servers} after "
            f"{self.settings.kafka_start_timeout_s:.0f}s: {self._log_tail()}"
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the broker: SIGTERM (controlled shutdown), SIGKILL only if it hangs."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.running_pid() is not None:
            time.sleep(0.2)
        if self.running_pid() is not None:
            log.warning(
                "Kafka broker (pid %d) ignored SIGTERM for %.0fs; killing it", pid, timeout_s
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.5)
        self.pid_file.unlink(missing_ok=True)
        log.info("Kafka broker stopped (pid %d)", pid)

    def _log_tail(self, lines: int = 15) -> str:
        for path in (self.data_dir / "logs" / "stdout.log", self.log_file):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                if tail:
                    return f"last lines of {path}:\n" + "\n".join(tail)
        return "no broker log written"


def _megabytes(heap: str) -> int:
    value, unit = int(heap[:-1]), heap[-1].lower()
    return {"k": max(1, value // 1024), "m": value, "g": value * 1024}[unit]


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging

    parser = argparse.ArgumentParser(
        prog="python -m app.kafka_local",
        description="Start, stop or check the project's local single-node KRaft Kafka broker. "
        "Host, ports, data directory and heap come from KAFKA_HOST, KAFKA_PORT, "
        "KAFKA_CONTROLLER_PORT, KAFKA_DATA_DIR and KAFKA_HEAP.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--topics",
        action="store_true",
        help="with `up`: also create the product's topics (KAFKA_*_TOPIC)",
    )
    args = parser.parse_args(argv)
    setup_logging()
    broker = LocalKafkaBroker(BrokerSettings())
    try:
        if args.action == "up":
            broker.start()
            if args.topics:
                from app.config import KafkaSettings
                from app.kafka_io import ensure_product_topics

                kafka = KafkaSettings(kafka_bootstrap_servers=broker.bootstrap_servers)
                ensure_product_topics(kafka)
            print(broker.bootstrap_servers)
        elif args.action == "down":
            broker.stop()
        else:
            pid = broker.running_pid()
            state = f"running (pid {pid})" if pid else "stopped"
            print(f"Kafka broker {state}; bootstrap {broker.bootstrap_servers}")
            return 0 if pid else 3
    except InfraError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
