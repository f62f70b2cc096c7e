"""The job's heartbeat: a small JSON record on the status topic every few seconds.

The producer waits for a fresh heartbeat before it streams (the job is ready), and the
dashboard's ``/health`` reads it to tell whether the job is alive and keeping up.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from app.config import KafkaSettings
from app.contracts import utc_now_iso

if TYPE_CHECKING:
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)


class Heartbeat:
    """Publishes the query's state and last progress every ``interval_s`` seconds."""

    def __init__(
        self,
        kafka: KafkaSettings,
        query: StreamingQuery,
        combos: list[str],
        interval_s: float = 5.0,
    ) -> None:
        self._kafka, self._query, self._combos = kafka, query, combos
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self.started_at = utc_now_iso()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._send(state="stopped")

    def snapshot(self, state: str | None = None) -> dict[str, Any]:
        progress: dict[str, Any] = self._query.lastProgress or {}
        sources = progress.get("sources") or [{}]
        return {
            "kind": "job_heartbeat",
            "state": state or ("running" if self._query.isActive else "stopped"),
            "query": self._query.name,
            "started_at": self.started_at,
            "sent_at": utc_now_iso(),
            "combos": self._combos,
            "batch_id": progress.get("batchId"),
            "num_input_rows": progress.get("numInputRows"),
            "input_rows_per_second": progress.get("inputRowsPerSecond"),
            "processed_rows_per_second": progress.get("processedRowsPerSecond"),
            "batch_duration_ms": (progress.get("durationMs") or {}).get("triggerExecution"),
            "end_offsets": sources[0].get("endOffset"),
            "latest_offsets": sources[0].get("latestOffset"),
        }

    def _send(self, state: str | None = None) -> None:
        from kafka import KafkaProducer

        try:
            producer = KafkaProducer(**self._kafka.client_options(), linger_ms=0)
            try:
                producer.send(
                    self._kafka.kafka_status_topic,
                    key=b"job",
                    value=json.dumps(self.snapshot(state), default=str).encode(),
                )
                producer.flush(timeout=10)
            finally:
                producer.close(timeout=5)
        except Exception as exc:  # a heartbeat must never take the job down
            log.warning("heartbeat not sent: %s", exc)

    def _run(self) -> None:
        self._send(state="running")
        last_batch = None
        while not self._stop.wait(self._interval_s):
            self._send()
            progress: dict[str, Any] = self._query.lastProgress or {}
            if progress.get("batchId") != last_batch and progress.get("numInputRows"):
                last_batch = progress.get("batchId")
                log.info(
                    "batch %s: %s rows in %s ms",
                    last_batch,
                    progress.get("numInputRows"),
                    (progress.get("durationMs") or {}).get("triggerExecution"),
                )
