"""Pure pandas views of scored hours: what the dashboard shows, computed without Dash or Kafka.

Every function takes records (``ScoredHour`` dicts, as the store keeps them) or frames and
returns frames or plain rows, so the views are unit-tested without a browser.

Examples
--------
>>> rows = [
...     {"combo": "A", "hour": "2025-01-01T00:00:00Z", "status": "warming_up", "count": 5.0},
...     {"combo": "A", "hour": "2025-01-01T01:00:00Z", "status": "scored", "count": 50.0,
...      "score": 4.0, "threshold": 3.0, "is_anomaly": True, "direction": "spike"},
... ]
>>> frame = combo_frame(rows)
>>> len(frame), int(frame["is_anomaly"].sum())
(2, 1)
>>> table_rows(overview({"A": rows}), ["combo", "status", "count", "flags_24h"])
[{'combo': 'A', 'status': 'scored', 'count': 50, 'flags_24h': 1}]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from app.artifacts import find_metas
from app.catalog import detector_names
from app.contracts import ScoredHour

#: Columns of a combo frame: every field of the scored-hour contract.
FRAME_COLUMNS: tuple[str, ...] = tuple(ScoredHour.model_fields)

#: Columns of the overview table, in display order.
OVERVIEW_COLUMNS = (
    "combo",
    "latest_hour",
    "status",
    "count",
    "expected",
    "score",
    "threshold",
    "false_alarms_per_day",
    "flags_24h",
)

#: Columns of the recent-hours and flagged-hours tables, in display order.
HOUR_COLUMNS = (
    "hour",
    "status",
    "count",
    "expected",
    "expected_low",
    "expected_high",
    "score",
    "threshold",
    "is_anomaly",
    "direction",
)

GROUND_TRUTH_COLUMNS = ("timestamp", "combo", "is_anomaly", "event_id", "anomaly_type")

#: Model families whose directories ``/health`` and the page report.
MODEL_FAMILIES = detector_names()


def combo_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per hour, oldest first; ``hour`` as a UTC timestamp.

    Duplicated hours keep the **last** record (the sink is at-least-once and the newest
    record wins).  ``is_anomaly`` is a plain bool (null counts as not flagged).
    """
    frame = pd.DataFrame.from_records(list(records), columns=list(FRAME_COLUMNS))
    if frame.empty:
        frame = frame.astype({"hour": "datetime64[ns, UTC]"})
        frame["is_anomaly"] = frame["is_anomaly"].astype(bool)
        return frame
    frame["hour"] = pd.to_datetime(frame["hour"], utc=True)
    frame = frame.drop_duplicates(["combo", "hour"], keep="last")
    frame = frame.sort_values("hour", kind="stable").reset_index(drop=True)
    numeric = ("count", "score", "threshold", "expected", "expected_low", "expected_high")
    for column in (*numeric, "false_alarms_per_day"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["is_anomaly"] = frame["is_anomaly"].eq(True)
    return frame


def default_combo(combos: Sequence[str], preferred: str | None) -> str | None:
    """``preferred`` (``COMBO``) when set, else the first combo alphabetically, else None.

    Examples
    --------
    >>> default_combo(["b", "a"], None), default_combo(["b", "a"], "b"), default_combo([], None)
    ('a', 'b', None)
    """
    if preferred:
        return preferred
    return min(combos) if combos else None


def overview(
    latest: Mapping[str, Sequence[Mapping[str, Any]]], window_hours: int = 24
) -> pd.DataFrame:
    """One row per combo: its latest hour, that hour's status/count/score, and how many
    hours were flagged in its last ``window_hours`` hours of data (ending at its latest hour,
    not at the wall clock, so a replayed or paused stream reads the same)."""
    rows = []
    for combo in sorted(latest):
        frame = combo_frame(latest[combo])
        if frame.empty:
            continue
        last = frame.iloc[-1]
        since = last["hour"] - pd.Timedelta(hours=window_hours)
        recent = frame[frame["hour"] > since]
        rows.append(
            {
                "combo": combo,
                "latest_hour": last["hour"],
                "status": last["status"],
                "count": last["count"],
                "expected": last["expected"],
                "score": last["score"],
                "threshold": last["threshold"],
                "false_alarms_per_day": last["false_alarms_per_day"],
                "flags_24h": int(recent["is_anomaly"].sum()),
            }
        )
    return pd.DataFrame(rows, columns=list(OVERVIEW_COLUMNS))


def recent_hours(frame: pd.DataFrame, n: int = 24) -> pd.DataFrame:
    """The newest ``n`` hours, newest first."""
    return frame.tail(n).iloc[::-1].reset_index(drop=True)


def flagged_hours(frame: pd.DataFrame, n: int = 100) -> pd.DataFrame:
    """The newest ``n`` flagged hours, newest first."""
    return frame[frame["is_anomaly"]].tail(n).iloc[::-1].reset_index(drop=True)


def read_ground_truth(path: Path) -> pd.DataFrame:
    """Labelled anomalous hours from a dataset CSV: columns ``hour, combo, event_id,
    anomaly_type`` (rows with ``is_anomaly`` true only).  This is the demo overlay, never
    an input to scoring."""
    raw = pd.read_csv(path, usecols=lambda c: c in GROUND_TRUTH_COLUMNS)
    missing = {"timestamp", "combo", "is_anomaly"} - set(raw.columns)
    if missing:
        raise ValueError(f"ground-truth file {path} lacks columns {sorted(missing)}")
    flags = raw["is_anomaly"]
    if flags.dtype != bool:
        flags = flags.astype(str).str.strip().str.lower().isin(("1", "true", "yes"))
    labelled = raw[flags]
    return pd.DataFrame(
        {
            "hour": pd.to_datetime(labelled["timestamp"], utc=True, format="ISO8601").dt.floor("h"),
            "combo": labelled["combo"].astype(str),
            "event_id": labelled.get("event_id", pd.Series(pd.NA, index=labelled.index)),
            "anomaly_type": labelled.get("anomaly_type", pd.Series(pd.NA, index=labelled.index)),
        }
    ).reset_index(drop=True)


def ground_truth_for(truth: pd.DataFrame, combo: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``combo``'s labelled hours that fall inside ``frame``, with the observed count as
    ``count`` (to draw them on the series; NaN where the hour was missing)."""
    if truth.empty or frame.empty:
        return pd.DataFrame(columns=["hour", "count", "event_id", "anomaly_type"])
    mine = truth[
        (truth["combo"] == combo) & truth["hour"].between(frame["hour"].min(), frame["hour"].max())
    ]
    merged = mine.merge(frame[["hour", "count"]], on="hour", how="left")
    return merged[["hour", "count", "event_id", "anomaly_type"]]


#: Columns shown as whole numbers (transactions per hour).
WHOLE_COLUMNS = ("count", "expected", "expected_low", "expected_high")


def _cell(value: Any, digits: int) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return round(value) if digits == 0 else round(value, digits)
    return value


def table_rows(
    frame: pd.DataFrame, columns: Sequence[str], digits: int = 2
) -> list[dict[str, Any]]:
    """Rows for a table: times as ``YYYY-MM-DD HH:MM`` (UTC), counts as whole numbers,
    other floats rounded to ``digits``, flags as ``"yes"``/``""``, NaN as None.

    Examples
    --------
    >>> table_rows(pd.DataFrame({"hour": [pd.Timestamp("2025-01-01T05:00Z")], "count": [7.6],
    ...                          "score": [1.234], "is_anomaly": [True]}),
    ...            ["hour", "count", "score", "is_anomaly"])
    [{'hour': '2025-01-01 05:00', 'count': 8, 'score': 1.23, 'is_anomaly': 'yes'}]
    """
    return [
        {c: _cell(row[c], 0 if c in WHOLE_COLUMNS else digits) for c in columns}
        for row in frame[list(columns)].to_dict("records")
    ]


def find_models(model_path: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Combos with a readable ``meta.json`` per family, and the unreadable ones' paths.

    Only JSON is read (the dashboard never loads weights).
    """
    return find_metas(model_path)
