"""Wire records (JSON on Kafka).  TECHNICAL.md documents the final shapes.

Pure module: no Spark, Kafka or torch imports, so the producer, the job, the
dashboard and the tests share one definition.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.catalog import detector_names
from app.ingest import Accepted, _combo, _produced_at, _Reject, parse_timestamp, show

#: Spark DDL schema of an hourly-count message's JSON value (for tests that read the input
#: topic with Spark; the job itself validates with ``app.ingest.validate``).
HOURLY_COUNT_DDL = "combo STRING, hour STRING, count DOUBLE, produced_at STRING"


def format_hour(moment: datetime) -> str:
    """ISO 8601 UTC with a ``Z``: ``2025-03-02T14:00:00Z``.

    Examples
    --------
    >>> format_hour(datetime(2025, 3, 2, 14, tzinfo=UTC))
    '2025-03-02T14:00:00Z'
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now_iso() -> str:
    """Current time, ISO 8601 UTC with milliseconds and a ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HourlyCount(BaseModel):
    """One hour of one combo: the input contract (key = ``combo``).

    The same rules as ``app.ingest.validate`` (which returns these fields for an accepted
    message): combo 1-200 printable characters without leading/trailing spaces; hour in the
    contract's timestamp grammar (``T``, seconds, ``Z`` or an offset; kept as UTC with a
    ``Z``); count a non-negative integer (no bool); produced_at null or a timestamp.
    Limits that are settings (``MAX_COUNT``, step alignment, past/future guards, known
    combos) are checked by the validator only.  Ground-truth labels never travel here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    combo: str
    hour: str
    count: int = Field(ge=0)
    produced_at: str | None = None

    @field_validator("combo")
    @classmethod
    def _combo_is_printable(cls, value: str) -> str:
        try:
            return _combo(value)
        except _Reject as exc:
            raise ValueError(exc.reason) from None

    @field_validator("hour")
    @classmethod
    def _hour_is_a_utc_timestamp(cls, value: str) -> str:
        parsed = parse_timestamp(value)
        if isinstance(parsed, str):
            raise ValueError(f"hour {parsed}: found {show(value)}")
        return format_hour(parsed)

    @field_validator("produced_at")
    @classmethod
    def _produced_at_is_a_timestamp(cls, value: str | None) -> str | None:
        try:
            return _produced_at(value)
        except _Reject as exc:
            raise ValueError(exc.reason) from None

    @classmethod
    def from_accepted(cls, accepted: Accepted) -> HourlyCount:
        """The contract's fields of a message ``app.ingest.validate`` accepted."""
        return cls(
            combo=accepted.combo,
            hour=accepted.hour,
            count=accepted.count,
            produced_at=accepted.produced_at,
        )

    def to_json_bytes(self) -> bytes:
        """The wire form: compact JSON, fields in contract order, ``produced_at`` omitted
        when null."""
        return json.dumps(
            self.model_dump(exclude_none=True), separators=(",", ":"), allow_nan=False
        ).encode()

    @classmethod
    def make(cls, combo: str, hour: datetime, count: int) -> HourlyCount:
        return cls(combo=combo, hour=format_hour(hour), count=count, produced_at=utc_now_iso())


def dumps(record: dict[str, Any]) -> bytes:
    """Compact JSON bytes for a record."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()


#: Statuses of a scored-hour record.
SCORED_STATUSES = ("scored", "warming_up", "missing", "error")


class ScoredHour(BaseModel):
    """One hour of one combo after scoring: the output contract (key = ``combo``).

    Score direction: higher ``score`` = more anomalous; ``is_anomaly`` is
    ``score > threshold``.  Per-detector raw scores are in each detector's own units
    (FCVAE: negative last-point log-likelihood); ``*_calibrated`` and ``score`` are on
    the common calibrated scale (TECHNICAL.md, "Scores").  Fields that do not apply to
    a status are null (a ``missing`` hour has no count and no score).
    The sink is at-least-once: consumers keep the newest record per (combo, hour).
    Every detector registered in ``app.catalog`` has its ``<name>_score`` and
    ``<name>_calibrated`` on the wire (``scored_fields``); the model declares the shipped
    detectors' ones.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    combo: str
    hour: str
    status: str
    count: float | None = None
    score: float | None = None
    threshold: float | None = None
    false_alarms_per_day: float | None = None  # the threshold's expected rate (validation)
    is_anomaly: bool | None = None
    direction: str | None = None  # "spike" | "dip" when flagged
    expected: float | None = None
    expected_low: float | None = None
    expected_high: float | None = None
    fcvae_score: float | None = None
    fcvae_calibrated: float | None = None
    vaegan_score: float | None = None
    vaegan_calibrated: float | None = None
    detector: str | None = None  # "ensemble" | "fcvae" | "vaegan"
    model_version: str | None = None
    error: str | None = None
    produced_at: str | None = None
    scored_at: str | None = None


#: ``ScoredHour`` fields that name the hour, its status and provenance (not from scoring).
_NOT_SCORED = frozenset(
    {"combo", "hour", "status", "count", "detector", "model_version", "error"}
    | {"produced_at", "scored_at"}
)


def detector_fields(name: str) -> tuple[str, str]:
    """Detector ``name``'s fields in a scored hour: its raw and its calibrated score.

    Examples
    --------
    >>> detector_fields("fcvae")
    ('fcvae_score', 'fcvae_calibrated')
    """
    return f"{name}_score", f"{name}_calibrated"


def scored_fields() -> tuple[str, ...]:
    """Every field a scored hour may carry, in wire order: ``ScoredHour``'s, with the
    fields of each detector registered in ``app.catalog`` that the model does not declare
    after the declared detectors' ones (before ``detector``).  With the shipped detectors
    these are exactly ``ScoredHour``'s fields."""
    return _wire_fields(detector_names())[0]


def score_fields() -> tuple[str, ...]:
    """The fields of a scored hour that come from scoring (not naming the hour, its
    status or provenance), every registered detector's included, in wire order."""
    return _wire_fields(detector_names())[2]


@functools.lru_cache(maxsize=8)
def _wire_fields(
    names: tuple[str, ...],
) -> tuple[tuple[str, ...], frozenset[str], tuple[str, ...]]:
    """For the registered detectors ``names``: the wire fields in order, as a set, and
    those that come from scoring (cached: ``scored_hour_json`` runs once a scored hour)."""
    declared = tuple(ScoredHour.model_fields)
    added = tuple(
        field
        for name in names
        for field in detector_fields(name)
        if field not in ScoredHour.model_fields
    )
    cut = declared.index("detector")
    ordered = declared[:cut] + added + declared[cut:]
    scored = tuple(name for name in ordered if name not in _NOT_SCORED)
    return ordered, frozenset(ordered), scored


def scored_hour_json(record: dict[str, Any]) -> str:
    """The wire form of a scored hour (what the job writes to the scored topic): the
    record's fields in ``ScoredHour``'s order (``scored_fields``), compact JSON, never NaN.

    A key that is not a field of the contract is an error (a programming error: the
    scorer's records are checked against the contract by the tests), so nothing travels
    that the contract does not name.

    Examples
    --------
    >>> scored_hour_json({"status": "missing", "hour": "2025-03-02T14:00:00Z", "combo": "A"})
    '{"combo":"A","hour":"2025-03-02T14:00:00Z","status":"missing"}'
    """
    fields, known, _ = _wire_fields(detector_names())
    unknown = sorted(set(record) - known)
    if unknown:
        raise ValueError(f"fields {unknown} are not in the ScoredHour contract")
    ordered = {name: record[name] for name in fields if name in record}
    return json.dumps(ordered, separators=(",", ":"), allow_nan=False)
