"""Score a batch of window emissions: the shared core of the stream and the batch scorer.

Input is what ``advance`` emits (one row per step: combo, step, status, count, window
text, ...), as a pandas frame — from Spark's state function in the stream, or from
``python -m app.score`` offline.  Ready windows are scored with one batched call per
combo (never one call per row); every other status passes through.  A combo whose
model fails yields ``status="error"`` records and a log line naming it; the batch
goes on.  No Spark and no Kafka here.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from app.contracts import score_fields, scored_hour_json, utc_now_iso
from app.ingest import cap_raw_text, cut_text
from app.streaming.state import parse_window
from app.timebase import window_seed

log = logging.getLogger(__name__)

_STATUS_OUT = {"ready": "scored", "warming_up": "warming_up", "missing": "missing"}
_DEAD = {
    "duplicate": "duplicate hour: this combo already has a record for this hour",
    "late": "late hour: older than the newest hour already accepted for this combo",
    "ahead": "too far ahead of this combo",  # advance gives the exact reason
    "invalid": "invalid message",  # the validator gives the exact reason
}
#: Default bound of a dead letter's raw copy (``DEADLETTER_MAX_RAW_BYTES``).
DEFAULT_MAX_RAW_BYTES = 65_536
#: A reason is at most this many bytes of JSON text (validator reasons are far shorter).
MAX_REASON_BYTES = 2_000


def step_to_iso(step: int, step_seconds: int = 3600) -> str:
    """Epoch step → ISO 8601 UTC.

    Examples
    --------
    >>> step_to_iso(0)
    '1970-01-01T00:00:00Z'
    """
    moment = datetime.fromtimestamp(int(step) * step_seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def batch_time_iso(batch_ms: int) -> str:
    """A micro-batch timestamp (epoch ms) as ISO 8601 UTC with milliseconds.

    Examples
    --------
    >>> batch_time_iso(1_700_000_000_123)
    '2023-11-14T22:13:20.123Z'
    """
    moment = datetime.fromtimestamp(batch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{batch_ms % 1000:03d}Z"


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def score_emissions(
    frame: pd.DataFrame,
    registry: Any,
    *,
    step_seconds: int = 3600,
    seed: int = 0,
    scored_at: str | None = None,
    max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Turn emissions into scored-hour records and dead-letter records.

    Parameters
    ----------
    frame
        Columns ``combo, step, status, count, window_values`` (+ ``produced_at``,
        ``raw``, ``src_partition``, ``src_offset`` when known).
    registry
        Gives ``registry.bundle(combo)`` with ``version``, ``detector`` and
        ``score(windows, seeds) -> dict[str, ndarray]``.

    Returns
    -------
    (scored, dead)
        Scored-hour dicts (the ``ScoredHour`` contract) in input order, and dead-letter
        dicts (with the ``combo``, the message key) for duplicate/late/ahead hours and
        for records the job's validation rejected (status ``invalid``, with their
        ``reason``).  A dead letter's ``raw`` is cut to ``max_raw_bytes`` of JSON text
        (``raw_bytes`` and ``raw_sha256`` describe the whole original value), so no dead
        letter can outgrow the sink's request size, however its input was built.
        ``scored_at`` (also the dead letters' ``failed_at``) is the caller's: the stream
        passes its micro-batch time, so a replayed batch writes byte-identical records.
    """
    scored_at = scored_at or utc_now_iso()
    records: list[dict[str, Any] | None] = [None] * len(frame)
    dead: list[dict[str, Any]] = []
    ready_rows: dict[str, list[int]] = {}
    for i, row in enumerate(frame.itertuples(index=False)):
        if row.status in _DEAD:
            dead.append(_dead_letter(row, scored_at, max_raw_bytes))
            continue
        records[i] = {
            "combo": row.combo,
            "hour": step_to_iso(row.step, step_seconds),
            "status": _STATUS_OUT[row.status],
            "count": _clean(row.count),
            "produced_at": getattr(row, "produced_at", None),
            "scored_at": scored_at,
        }
        if row.status == "ready":
            ready_rows.setdefault(row.combo, []).append(i)

    fields = score_fields()  # every registered detector's scores too
    for combo, idx in ready_rows.items():
        try:
            bundle = registry.bundle(combo)
            windows = np.array(
                [parse_window(frame["window_values"].iat[i]) for i in idx], dtype=np.float64
            )
            seeds = np.array(
                [window_seed(combo, int(frame["step"].iat[i]), seed) for i in idx], dtype=np.int64
            )
            result = bundle.score(windows, seeds)
            for j, i in enumerate(idx):
                record = records[i]
                assert record is not None
                for name in fields:
                    values = result.get(name)
                    record[name] = None if values is None else _clean(values[j])
                record["detector"] = bundle.detector
                record["model_version"] = bundle.version
        except Exception as exc:  # the one place a combo's failure is caught
            log.exception("scoring failed for combo=%s (%d hours)", combo, len(idx))
            for i in idx:
                record = records[i]
                assert record is not None
                record["status"] = "error"
                record["error"] = f"{type(exc).__name__}: {exc}"[:500]
    return [r for r in records if r is not None], dead


def _dead_letter(row: Any, failed_at: str, max_raw_bytes: int) -> dict[str, Any]:
    reason = getattr(row, "reason", None)
    if not isinstance(reason, str) or row.status in ("duplicate", "late"):
        reason = _DEAD[row.status]
    raw = getattr(row, "raw", None)
    raw = cap_raw_text(raw if isinstance(raw, str) else None, max_raw_bytes)
    raw_bytes = _clean(getattr(row, "raw_bytes", None))
    raw_bytes = None if isinstance(raw_bytes, float) and raw_bytes != raw_bytes else raw_bytes
    sha = getattr(row, "raw_sha256", None)
    kept = None
    if raw is not None:
        kept = len(raw) - 7 if raw.startswith("base64:") else len(raw.encode("utf-8"))
        if raw.startswith("base64:"):
            kept = (kept // 4) * 3 - raw[-2:].count("=")
    combo = row.combo if isinstance(row.combo, str) else None
    return {
        "combo": None if combo is None else cut_text(combo, 800),
        "raw": raw,
        "raw_bytes": None if raw_bytes is None else int(raw_bytes),
        "raw_sha256": sha if isinstance(sha, str) else None,
        "raw_truncated": bool(raw_bytes is not None and kept is not None and kept < raw_bytes),
        "reason": cut_text(reason, MAX_REASON_BYTES),
        "source_partition": _clean(getattr(row, "src_partition", None)),
        "source_offset": _clean(getattr(row, "src_offset", None)),
        "failed_at": failed_at,
    }


_REGISTRIES: dict[tuple[str, str, int | None], Any] = {}


def get_registry(model_path: str, detector: str, n_samples: int | None, torch_threads: int) -> Any:
    """A process-wide registry per (path, detector, n_samples): models load once per worker."""
    key = (model_path, detector, n_samples)
    if key not in _REGISTRIES:
        import torch

        from app.registry import ModelRegistry

        torch.set_num_threads(torch_threads)
        _REGISTRIES[key] = ModelRegistry(model_path, detector=detector, n_samples=n_samples)
    return _REGISTRIES[key]


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def emissions_to_messages(
    frame: pd.DataFrame,
    *,
    model_path: str,
    detector: str,
    n_samples: int | None,
    torch_threads: int,
    scored_topic: str,
    deadletter_topic: str,
    source_topic: str,
    step_seconds: int = 3600,
    scored_at: str | None = None,
    max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES,
) -> pd.DataFrame:
    """Score a batch of emissions and shape it as Kafka sink rows (topic, key, value)."""
    registry = get_registry(model_path, detector, n_samples, torch_threads)
    scored, dead = score_emissions(
        frame,
        registry,
        step_seconds=step_seconds,
        scored_at=scored_at,
        max_raw_bytes=max_raw_bytes,
    )
    rows: list[tuple[str, str | None, str]] = [
        (scored_topic, r["combo"], scored_hour_json(r)) for r in scored
    ]
    rows.extend(
        (deadletter_topic, d.pop("combo"), _dumps({**d, "source_topic": source_topic}))
        for d in dead
    )
    return pd.DataFrame(rows, columns=["topic", "key", "value"])


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Scored-hour records as a frame (for the batch scorer and the tests)."""
    return pd.DataFrame(list(records))
