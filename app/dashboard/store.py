"""The dashboard's memory: a bounded, deduplicated history of scored hours, fed from Kafka.

``ScoredStore`` is a plain thread-safe container (no Kafka): per combo it keeps at most
``history_hours`` of the newest hours, one record per ``(combo, hour)`` — the newest
record wins, because the job's sink is at-least-once and a replayed batch writes the
same hour again — and counters that callbacks and ``/health`` read without touching
Kafka.  ``KafkaFeed`` is the background thread that fills it: it assigns every
partition of the scored topic (no consumer group, nothing committed), seeks to the
beginning, i.e. **replays the topic on start**, follows the one-partition status topic
for the job's heartbeat, measures the consumer lag, and rebuilds its consumer by itself
when the broker goes away and comes back.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from app.config import KafkaSettings
from app.contracts import ScoredHour, format_hour

log = logging.getLogger(__name__)

#: Record statuses whose retained hours are counted (``ScoredHour.status``).
COUNTED_STATUSES = ("scored", "warming_up", "missing", "error")


def hour_key(hour: str) -> str:
    """The canonical ``YYYY-MM-DDTHH:MM:SSZ`` form of an ISO hour (the dedup key).

    Examples
    --------
    >>> hour_key("2025-03-02T14:00:00Z")
    '2025-03-02T14:00:00Z'
    >>> hour_key("2025-03-02T15:00:00+01:00")
    '2025-03-02T14:00:00Z'
    """
    if len(hour) == 20 and hour[-1] == "Z" and hour[10] == "T":
        return hour
    moment = datetime.fromisoformat(hour.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"hour {hour!r} has no time zone")
    return format_hour(moment)


@dataclass
class _ComboHistory:
    """One combo's retained hours: a dict for dedup plus a min-heap of hours for trimming."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    oldest: list[str] = field(default_factory=list)  # heap of the keys of ``records``
    statuses: Counter[str] = field(default_factory=Counter)
    flagged: int = 0
    version: int = 0


@dataclass(frozen=True)
class KafkaState:
    """What the feed last learnt about Kafka (a snapshot; times are epoch seconds)."""

    connected: bool = False
    bootstrap_servers: str = ""
    scored_topic: str = ""
    status_topic: str = ""
    partitions: int = 0
    lag: int | None = None
    last_ok_at: float | None = None
    last_error: str | None = None
    reconnects: int = 0


class ScoredStore:
    """Thread-safe, bounded, deduplicated history of scored hours per combo.

    Parameters
    ----------
    history_hours
        Newest hours kept per combo; older hours are dropped (memory stays bounded).
    clock
        Wall clock in epoch seconds (tests pass a fake one).

    Examples
    --------
    >>> store = ScoredStore(history_hours=2)
    >>> for hour, score in [("2025-01-01T00:00:00Z", 0.1), ("2025-01-01T01:00:00Z", 0.2),
    ...                     ("2025-01-01T01:00:00Z", 0.9), ("2025-01-01T02:00:00Z", 0.3)]:
    ...     _ = store.add({"combo": "A", "hour": hour, "status": "scored", "score": score})
    >>> [(r["hour"][11:13], r["score"]) for r in store.records("A")]
    [('01', 0.9), ('02', 0.3)]
    >>> store.counters()["duplicates"], store.counters()["hours"]
    (1, 2)
    """

    def __init__(self, history_hours: int, *, clock: Callable[[], float] = time.time) -> None:
        if history_hours < 1:
            raise ValueError(f"history_hours must be >= 1, got {history_hours}")
        self.history_hours = history_hours
        self._clock = clock
        self._lock = threading.Lock()
        self._combos: dict[str, _ComboHistory] = {}
        self._received = 0
        self._invalid = 0
        self._duplicates = 0
        self._too_old = 0
        self._heartbeats = 0
        self._last_message_at: float | None = None  # Kafka timestamp of the newest record
        self._last_received_at: float | None = None  # wall time it arrived here
        self._heartbeat: dict[str, Any] | None = None
        self._heartbeat_at: float | None = None
        self._kafka = KafkaState()
        self.started_at = clock()

    # -- writing (the feed thread) ---------------------------------------------------------

    def add(
        self, record: ScoredHour | Mapping[str, Any], *, timestamp_s: float | None = None
    ) -> bool:
        """Keep one scored record; return whether it is kept (False: invalid or too old).

        ``timestamp_s`` is the Kafka record's timestamp (defaults to now).
        """
        return self.add_many([(record, timestamp_s)]) == 1

    def add_many(self, items: Iterable[tuple[ScoredHour | Mapping[str, Any], float | None]]) -> int:
        """Keep many ``(record, kafka_timestamp_s)`` pairs under one lock; return how many."""
        parsed: list[tuple[dict[str, Any], float | None]] = []
        invalid = 0
        for record, ts in items:
            try:
                row = (
                    record.model_dump()
                    if isinstance(record, ScoredHour)
                    else ScoredHour.model_validate(record).model_dump()
                )
                row["hour"] = hour_key(row["hour"])
            except (ValidationError, ValueError, TypeError) as exc:
                invalid += 1
                log.warning("ignoring a scored record that breaks the contract: %s", exc)
                continue
            parsed.append((row, ts))
        now = self._clock()
        kept = 0
        with self._lock:
            self._received += len(parsed) + invalid
            self._invalid += invalid
            if parsed or invalid:
                self._last_received_at = now
            for row, ts in parsed:
                stamp = now if ts is None else ts
                if self._last_message_at is None or stamp > self._last_message_at:
                    self._last_message_at = stamp
                kept += self._keep(row)
        return kept

    def _keep(self, row: dict[str, Any]) -> int:
        history = self._combos.setdefault(row["combo"], _ComboHistory())
        hour = row["hour"]
        old = history.records.get(hour)
        if old is not None:
            self._duplicates += 1
            self._count(history, old, -1)
        elif len(history.records) >= self.history_hours and hour < history.oldest[0]:
            self._too_old += 1  # older than everything retained: would be trimmed at once
            return 0
        else:
            heapq.heappush(history.oldest, hour)
        history.records[hour] = row
        self._count(history, row, +1)
        while len(history.records) > self.history_hours:
            dropped = history.records.pop(heapq.heappop(history.oldest))
            self._count(history, dropped, -1)
        history.version += 1
        return 1

    @staticmethod
    def _count(history: _ComboHistory, row: Mapping[str, Any], sign: int) -> None:
        history.statuses[row["status"]] += sign
        if row.get("is_anomaly"):
            history.flagged += sign

    def note_invalid(self, reason: str) -> None:
        """Count a scored-topic message that could not even be decoded."""
        with self._lock:
            self._received += 1
            self._invalid += 1
            self._last_received_at = self._clock()
        log.warning("ignoring an undecodable scored message: %s", reason)

    def set_heartbeat(self, payload: Mapping[str, Any]) -> None:
        """Keep the job's newest heartbeat (``kind="job_heartbeat"``) as sent."""
        sent = _epoch_s(payload.get("sent_at"))
        with self._lock:
            self._heartbeats += 1
            if self._heartbeat_at is not None and sent is not None and sent < self._heartbeat_at:
                return
            self._heartbeat = dict(payload)
            self._heartbeat_at = sent if sent is not None else self._clock()

    def set_kafka_state(self, state: KafkaState) -> None:
        with self._lock:
            self._kafka = state

    # -- reading (callbacks, /health) -------------------------------------------------------

    def combos(self) -> list[str]:
        """Combos seen so far, alphabetically."""
        with self._lock:
            return sorted(self._combos)

    def version(self, combo: str | None = None) -> int:
        """A number that changes whenever ``combo``'s history (or, with None, any) changes."""
        with self._lock:
            if combo is None:
                return sum(h.version for h in self._combos.values())
            history = self._combos.get(combo)
            return history.version if history else 0

    def records(self, combo: str) -> list[dict[str, Any]]:
        """A copy of ``combo``'s retained records, oldest hour first."""
        with self._lock:
            history = self._combos.get(combo)
            rows = list(history.records.values()) if history else []
        rows.sort(key=lambda r: r["hour"])
        return rows

    def latest(self, hours: int) -> dict[str, list[dict[str, Any]]]:
        """For every combo, its newest ``hours`` records (oldest first)."""
        with self._lock:
            snapshot = {c: list(h.records.values()) for c, h in self._combos.items()}
        out = {}
        for combo, rows in snapshot.items():
            rows.sort(key=lambda r: r["hour"])
            out[combo] = rows[-hours:]
        return out

    def counters(self) -> dict[str, Any]:
        """Message counters, and status counts over the retained (deduplicated) hours."""
        with self._lock:
            statuses: Counter[str] = Counter()
            flagged = 0
            for history in self._combos.values():
                statuses.update(history.statuses)
                flagged += history.flagged
            return {
                "messages_received": self._received,
                "invalid": self._invalid,
                "duplicates": self._duplicates,
                "too_old": self._too_old,
                "heartbeats_received": self._heartbeats,
                "combos": len(self._combos),
                "hours": sum(len(h.records) for h in self._combos.values()),
                "flagged": flagged,
                **{status: statuses.get(status, 0) for status in COUNTED_STATUSES},
            }

    def freshness(self) -> dict[str, float | None]:
        """Epoch-second times: newest record (Kafka timestamp), its arrival, newest heartbeat."""
        with self._lock:
            return {
                "last_message_at": self._last_message_at,
                "last_received_at": self._last_received_at,
                "last_heartbeat_at": self._heartbeat_at,
                "started_at": self.started_at,
            }

    def heartbeat(self) -> dict[str, Any] | None:
        with self._lock:
            return dict(self._heartbeat) if self._heartbeat else None

    def kafka_state(self) -> KafkaState:
        with self._lock:
            return self._kafka

    def now(self) -> float:
        return self._clock()


def _epoch_s(text: Any) -> float | None:
    """Epoch seconds of an ISO 8601 UTC string, or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class KafkaFeed:
    """Background thread: scored topic (replayed from the beginning) + status topic → store.

    Parameters
    ----------
    kafka
        Bootstrap servers, security and topic names.
    store
        Where records, heartbeats and the Kafka state go.
    poll_timeout_ms
        Longest wait for new records per poll.
    refresh_s
        How often lag and partitions are refreshed (this is also the liveness probe).
    retry_s
        Pause before building a new consumer after a failure.
    connect_timeout_ms
        Longest a (re)connection or an offsets request may block.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        store: ScoredStore,
        *,
        poll_timeout_ms: int = 500,
        refresh_s: float = 2.0,
        retry_s: float = 2.0,
        connect_timeout_ms: int = 5_000,
    ) -> None:
        self._kafka = kafka
        self._store = store
        self._poll_timeout_ms = poll_timeout_ms
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        self._connect_timeout_ms = connect_timeout_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._positions: dict[Any, int] = {}  # TopicPartition -> next offset to read
        self._state = KafkaState(
            bootstrap_servers=kafka.kafka_bootstrap_servers,
            scored_topic=kafka.kafka_scored_topic,
            status_topic=kafka.kafka_status_topic,
        )
        store.set_kafka_state(self._state)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dashboard-kafka-feed", daemon=True)
        self._thread.start()
        log.info(
            "replaying %s (and heartbeats from %s) from %s",
            self._kafka.kafka_scored_topic,
            self._kafka.kafka_status_topic,
            self._kafka.kafka_bootstrap_servers,
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------------

    def _publish(self, **changes: Any) -> None:
        self._state = KafkaState(**{**self._state.__dict__, **changes})
        self._store.set_kafka_state(self._state)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._connect()
                attempt = 0
                self._consume(consumer)
            except Exception as exc:  # any client failure: report, back off, rebuild
                attempt += 1
                text = str(exc)
                if not text.startswith(type(exc).__name__):
                    text = f"{type(exc).__name__}: {text}"
                self._publish(connected=False, last_error=text)
                log.warning(
                    "Kafka feed from %s failed (%s); reconnecting in %.0fs",
                    self._kafka.kafka_bootstrap_servers,
                    exc,
                    self._retry_s,
                )
                self._stop.wait(min(self._retry_s * attempt, 30.0))
            finally:
                if consumer is not None:
                    try:
                        consumer.close(autocommit=False)
                    except Exception as exc:  # closing a broken client must not kill the thread
                        log.debug("closing the consumer failed: %s", exc)

    def _connect(self) -> Any:
        from kafka import KafkaConsumer

        options = self._kafka.client_options()
        options["request_timeout_ms"] = min(
            options.get("request_timeout_ms", 30_000), max(self._connect_timeout_ms, 1_000)
        )
        consumer = KafkaConsumer(
            **options,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            bootstrap_timeout_ms=self._connect_timeout_ms,
            client_id="txn-anomaly-dashboard",
        )
        if self._state.last_ok_at is not None:
            self._publish(reconnects=self._state.reconnects + 1)
        return consumer

    def _assign(self, consumer: Any) -> list[Any]:
        """Assign every partition of both topics; seek new ones (scored: first offset,
        status: the newest heartbeat) and known ones to where this feed stopped."""
        from kafka import TopicPartition

        scored = [
            TopicPartition(self._kafka.kafka_scored_topic, p)
            for p in sorted(consumer.partitions_for_topic(self._kafka.kafka_scored_topic))
        ]
        status = [
            TopicPartition(self._kafka.kafka_status_topic, p)
            for p in sorted(consumer.partitions_for_topic(self._kafka.kafka_status_topic))
        ]
        wanted = scored + status
        if not wanted:
            return []
        fresh = [tp for tp in wanted if tp not in self._positions]
        if fresh:
            timeout = self._connect_timeout_ms
            begin = consumer.beginning_offsets(fresh, timeout_ms=timeout)
            end = consumer.end_offsets([tp for tp in fresh if tp in status], timeout_ms=timeout)
            for tp in fresh:
                start = begin[tp]
                if tp in end:  # status topic: only the newest heartbeat matters
                    start = max(start, end[tp] - 1)
                self._positions[tp] = start
        consumer.assign(wanted)
        for tp in wanted:
            consumer.seek(tp, self._positions[tp])
        return scored

    def _consume(self, consumer: Any) -> None:
        assigned = self._assign(consumer)
        next_refresh = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_refresh:
                next_refresh = now + self._refresh_s
                assigned = self._refresh(consumer, assigned)
            if not assigned:  # the scored topic does not exist yet
                self._stop.wait(self._refresh_s)
                continue
            batches = consumer.poll(timeout_ms=self._poll_timeout_ms)
            if batches:
                self._handle(batches)

    def _refresh(self, consumer: Any, assigned: list[Any]) -> list[Any]:
        """Compute the lag (the liveness probe: it fails when the broker is gone), then pick
        up partitions or a status topic that appeared since the last look."""
        lag: int | None = None
        if assigned:
            end = consumer.end_offsets(assigned, timeout_ms=self._connect_timeout_ms)
            lag = sum(max(0, end[tp] - self._positions.get(tp, 0)) for tp in assigned)
        scored_partitions = consumer.partitions_for_topic(self._kafka.kafka_scored_topic)
        status_partitions = consumer.partitions_for_topic(self._kafka.kafka_status_topic)
        status_known = any(tp.topic == self._kafka.kafka_status_topic for tp in self._positions)
        if len(scored_partitions) != len(assigned) or (status_partitions and not status_known):
            assigned = self._assign(consumer)
        self._publish(
            connected=True,
            partitions=len(assigned),
            lag=lag,
            last_ok_at=self._store.now(),
            last_error=None if assigned else f"topic {self._kafka.kafka_scored_topic} not found",
        )
        return assigned

    def _handle(self, batches: Mapping[Any, list[Any]]) -> None:
        scored: list[tuple[Mapping[str, Any], float | None]] = []
        for tp, messages in batches.items():
            for message in messages:
                self._positions[tp] = message.offset + 1
                try:
                    payload = json.loads(message.value) if message.value is not None else None
                except (ValueError, UnicodeDecodeError) as exc:
                    payload = None
                    error = f"offset {tp.partition}/{message.offset}: {exc}"
                else:
                    error = f"offset {tp.partition}/{message.offset}: not a JSON object"
                if tp.topic == self._kafka.kafka_status_topic:
                    if isinstance(payload, dict) and payload.get("kind") == "job_heartbeat":
                        self._store.set_heartbeat(payload)
                    continue
                if not isinstance(payload, dict):
                    self._store.note_invalid(error)
                    continue
                stamp = (
                    message.timestamp / 1000
                    if message.timestamp and message.timestamp > 0
                    else None
                )
                scored.append((payload, stamp))
        if scored:
            self._store.add_many(scored)
