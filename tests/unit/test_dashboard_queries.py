"""The dashboard without Kafka or a browser: store dedup and bounds, pandas views, figures,
the /health rule, and the import rule (no torch, no pyspark)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from app.contracts import ScoredHour, format_hour
from app.dashboard import layout, queries
from app.dashboard.server import assess_health, create_app, health_report
from app.dashboard.settings import DashboardSettings
from app.dashboard.store import KafkaState, ScoredStore, hour_key

START = datetime(2025, 3, 1, tzinfo=UTC)


def _hour(h: int) -> str:
    return format_hour(START + timedelta(hours=h))


def _row(combo: str, h: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "combo": combo,
        "hour": _hour(h),
        "status": "scored",
        "count": 100.0 + h,
        "score": 1.0,
        "threshold": 3.0,
        "is_anomaly": False,
        "expected": 100.0,
        "expected_low": 90.0,
        "expected_high": 110.0,
    }
    base.update(fields)
    return base


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- store -------------------------------------------------------------------------------------


def test_store_keeps_the_newest_record_per_combo_and_hour() -> None:
    store = ScoredStore(history_hours=100)
    store.add(_row("A", 0, score=5.0, is_anomaly=True))
    store.add(_row("A", 1))
    store.add(_row("A", 0, score=0.5, is_anomaly=False))  # a replayed batch, rescored
    store.add(_row("B", 0))

    rows = store.records("A")
    assert [r["hour"] for r in rows] == [_hour(0), _hour(1)]
    assert rows[0]["score"] == 0.5
    counters = store.counters()
    assert counters["messages_received"] == 4
    assert counters["duplicates"] == 1
    assert counters["hours"] == 3
    assert counters["flagged"] == 0  # the flag of the superseded record is gone
    assert counters["scored"] == 3
    assert store.combos() == ["A", "B"]


def test_store_dedups_equal_hours_written_differently() -> None:
    store = ScoredStore(history_hours=10)
    store.add(_row("A", 5))
    store.add({**_row("A", 5, score=2.0), "hour": "2025-03-01T06:00:00+01:00"})
    assert len(store.records("A")) == 1
    assert store.records("A")[0]["score"] == 2.0
    assert hour_key("2025-03-01T06:00:00+01:00") == _hour(5)


def test_store_memory_is_bounded_per_combo_whatever_the_order() -> None:
    store = ScoredStore(history_hours=24)
    hours = list(range(200))
    random.Random(7).shuffle(hours)
    for h in hours:
        store.add(_row("A", h, is_anomaly=h % 10 == 0, status="scored"))
    rows = store.records("A")
    assert len(rows) == 24
    assert [r["hour"] for r in rows] == [_hour(h) for h in range(176, 200)]
    counters = store.counters()
    assert counters["hours"] == 24
    assert counters["flagged"] == sum(1 for h in range(176, 200) if h % 10 == 0)
    assert counters["scored"] == 24
    assert counters["too_old"] > 0


def test_store_counts_statuses_and_rejects_broken_records() -> None:
    store = ScoredStore(history_hours=50)
    kept = store.add_many(
        [
            (_row("A", 0, status="warming_up", score=None), None),
            (_row("A", 1, status="missing", count=None, score=None), None),
            (_row("A", 2, status="error", score=None), None),
            (_row("A", 3, is_anomaly=True), None),
            ({"combo": "A"}, None),  # no hour, no status
            ({**_row("A", 4), "hour": "not a time"}, None),
        ]
    )
    store.note_invalid("not JSON")
    assert kept == 4
    counters = store.counters()
    assert counters["invalid"] == 3
    assert counters["messages_received"] == 7
    assert (counters["warming_up"], counters["missing"], counters["error"]) == (1, 1, 1)
    assert (counters["scored"], counters["flagged"]) == (1, 1)


def test_store_accepts_scored_hour_models_and_tracks_freshness() -> None:
    clock = FakeClock()
    store = ScoredStore(history_hours=10, clock=clock)
    assert store.freshness()["last_message_at"] is None
    store.add(ScoredHour(**_row("A", 0)), timestamp_s=clock.now - 30)
    store.add(ScoredHour(**_row("A", 1)), timestamp_s=clock.now - 60)  # an older record
    fresh = store.freshness()
    assert fresh["last_message_at"] == clock.now - 30
    assert fresh["last_received_at"] == clock.now


def test_store_keeps_the_newest_heartbeat() -> None:
    store = ScoredStore(history_hours=10)
    store.set_heartbeat(
        {"kind": "job_heartbeat", "state": "running", "sent_at": "2025-03-01T10:00:05Z"}
    )
    store.set_heartbeat(
        {"kind": "job_heartbeat", "state": "old", "sent_at": "2025-03-01T10:00:00Z"}
    )
    heartbeat = store.heartbeat()
    assert heartbeat is not None and heartbeat["state"] == "running"
    assert (
        store.freshness()["last_heartbeat_at"]
        == datetime(2025, 3, 1, 10, 0, 5, tzinfo=UTC).timestamp()
    )
    assert store.counters()["heartbeats_received"] == 2


def test_store_version_changes_only_with_the_combo() -> None:
    store = ScoredStore(history_hours=10)
    store.add(_row("A", 0))
    before_a, before_b = store.version("A"), store.version("B")
    store.add(_row("B", 0))
    assert store.version("A") == before_a
    assert store.version("B") != before_b


def test_store_rejects_a_nonsense_bound() -> None:
    with pytest.raises(ValueError, match="history_hours"):
        ScoredStore(history_hours=0)


# -- queries -----------------------------------------------------------------------------------


def test_combo_frame_sorts_dedups_and_types() -> None:
    frame = queries.combo_frame(
        [_row("A", 2), _row("A", 0, is_anomaly=None), _row("A", 2, score=9.0, is_anomaly=True)]
    )
    assert list(frame["hour"]) == [pd.Timestamp(_hour(0)), pd.Timestamp(_hour(2))]
    assert frame["is_anomaly"].tolist() == [False, True]
    assert frame.loc[1, "score"] == 9.0
    assert str(frame["hour"].dt.tz) == "UTC"
    empty = queries.combo_frame([])
    assert empty.empty and list(empty.columns) == list(queries.FRAME_COLUMNS)


def test_overview_counts_flags_in_each_combos_last_day_of_data() -> None:
    rows_a = [_row("A", h, is_anomaly=h in (2, 30, 40)) for h in range(48)]
    rows_b = [_row("B", h) for h in range(10)] + [_row("B", 10, status="missing", count=None)]
    table = queries.overview({"B": rows_b, "A": rows_a})
    assert table["combo"].tolist() == ["A", "B"]
    a, b = table.iloc[0], table.iloc[1]
    assert a["flags_24h"] == 2  # hour 2 is older than A's last 24 hours
    assert a["latest_hour"] == pd.Timestamp(_hour(47))
    assert b["status"] == "missing" and pd.isna(b["count"])
    assert b["flags_24h"] == 0


def test_recent_and_flagged_hours_are_newest_first() -> None:
    frame = queries.combo_frame([_row("A", h, is_anomaly=h % 5 == 0) for h in range(30)])
    recent = queries.recent_hours(frame, 3)
    assert recent["hour"].tolist() == [pd.Timestamp(_hour(h)) for h in (29, 28, 27)]
    flagged = queries.flagged_hours(frame, 2)
    assert flagged["hour"].tolist() == [pd.Timestamp(_hour(25)), pd.Timestamp(_hour(20))]


def test_default_combo_prefers_the_setting() -> None:
    assert queries.default_combo(["Star_CMP", "Accel_CMP"], None) == "Accel_CMP"
    assert queries.default_combo(["Star_CMP", "Accel_CMP"], "Star_CMP") == "Star_CMP"
    assert queries.default_combo([], None) is None


def test_table_rows_are_display_ready() -> None:
    frame = queries.combo_frame([_row("A", 0, count=1834.4, score=1.23456, is_anomaly=True)])
    (row,) = queries.table_rows(frame, list(queries.HOUR_COLUMNS))
    assert row["hour"] == "2025-03-01 00:00"
    assert row["count"] == 1834 and row["score"] == 1.23
    assert row["is_anomaly"] == "yes" and row["direction"] is None


def test_ground_truth_is_read_and_matched_to_the_series(tmp_path: Path) -> None:
    path = tmp_path / "truth.csv"
    path.write_text(
        "timestamp,combo,is_anomaly,event_id,anomaly_type\n"
        "2025-03-01 02:00:00,A,True,e1,spike\n"
        "2025-03-01T03:00:00Z,A,1,e1,spike\n"
        "2025-03-01 04:00:00,A,False,,\n"
        "2025-03-01 02:00:00,B,true,e2,dip\n"
        "2025-04-01 00:00:00,A,True,e3,ramp\n"
    )
    truth = queries.read_ground_truth(path)
    assert len(truth) == 4
    frame = queries.combo_frame([_row("A", h) for h in range(10)])
    marks = queries.ground_truth_for(truth, "A", frame)
    assert marks["hour"].tolist() == [pd.Timestamp(_hour(2)), pd.Timestamp(_hour(3))]
    assert marks["count"].tolist() == [102.0, 103.0]
    assert queries.ground_truth_for(truth, "C", frame).empty


def test_ground_truth_without_labels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,combo,count\n2025-03-01 00:00:00,A,3\n")
    with pytest.raises(ValueError, match="is_anomaly"):
        queries.read_ground_truth(path)


def test_find_models_reads_only_meta_json(tmp_path: Path) -> None:
    (tmp_path / "fcvae" / "A").mkdir(parents=True)
    (tmp_path / "fcvae" / "A" / "meta.json").write_text("{}")
    (tmp_path / "fcvae" / "B").mkdir(parents=True)
    (tmp_path / "fcvae" / "B" / "meta.json").write_text("{broken")
    (tmp_path / "vaegan" / "C").mkdir(parents=True)  # no meta.json
    found, broken = queries.find_models(tmp_path)
    assert found == {"fcvae": ["A"], "vaegan": []}
    assert broken == [str(tmp_path / "fcvae" / "B" / "meta.json")]
    assert queries.find_models(tmp_path / "nowhere") == ({"fcvae": [], "vaegan": []}, [])


# -- figures -----------------------------------------------------------------------------------


def _names(figure: dict[str, Any]) -> list[str]:
    return [trace["name"] for trace in figure["data"]]


def test_series_figure_draws_count_band_flags_and_truth() -> None:
    rows = [_row("A", h, is_anomaly=h in (7, 9)) for h in range(12)]
    rows[3] = _row(
        "A", 3, status="missing", count=None, score=None, expected_low=None, expected_high=None
    )
    frame = queries.combo_frame(rows)
    figure = layout.series_figure(frame, "A")
    assert _names(figure) == ["expected range", "expected", "count", "missing hour", "flagged"]
    traces = {t["name"]: t for t in figure["data"]}
    assert len(traces["count"]["x"]) == 12 and traces["count"]["y"][3] is None
    assert traces["flagged"]["marker"]["color"] == layout.COLORS["flagged"]
    assert len(traces["flagged"]["x"]) == 2
    assert traces["expected range"]["y"].count(None) == 2  # two polygons around the gap
    assert figure["layout"]["uirevision"] == "A"

    truth = pd.DataFrame(
        {
            "hour": [pd.Timestamp(_hour(7))],
            "count": [107.0],
            "event_id": ["e"],
            "anomaly_type": ["spike"],
        }
    )
    with_truth = layout.series_figure(frame, "A", truth)
    assert layout.TRUTH_NAME in _names(with_truth)
    json.dumps(with_truth)  # plain JSON, nothing for Dash to convert


def test_score_figure_and_empty_states() -> None:
    frame = queries.combo_frame([_row("A", h, is_anomaly=h == 4) for h in range(6)])
    figure = layout.score_figure(frame, "A")
    assert _names(figure) == ["score", "threshold", "flagged"]
    warming = queries.combo_frame([_row("A", 0, status="warming_up", score=None)])
    assert layout.score_figure(warming, "A")["data"] == []
    assert layout.series_figure(queries.combo_frame([]), "A")["data"] == []


def test_a_full_history_renders_quickly() -> None:
    store = ScoredStore(history_hours=24 * 28 * 2)
    store.add_many((_row("A", h, is_anomaly=h % 97 == 0), None) for h in range(3000))
    started = time.perf_counter()
    frame = queries.combo_frame(store.records("A"))
    layout.series_figure(frame, "A")
    layout.score_figure(frame, "A")
    queries.table_rows(queries.recent_hours(frame, 48), list(queries.HOUR_COLUMNS))
    queries.overview(store.latest(24))
    assert len(frame) == 24 * 28 * 2
    assert time.perf_counter() - started < 1.0  # ~25 ms here; callbacks run every refresh


# -- /health -----------------------------------------------------------------------------------


def _assess(**changes: Any) -> tuple[str, list[str]]:
    facts: dict[str, Any] = {
        "now": 1000.0,
        "max_age_s": 120.0,
        "kafka_connected": True,
        "models": {"fcvae": ["A"], "vaegan": []},
        "started_at": 0.0,
        "last_message_at": 990.0,
        "last_heartbeat_at": 995.0,
        "job_state": "running",
    }
    facts.update(changes)
    return assess_health(**facts)


def test_health_rule() -> None:
    assert _assess() == ("ok", [])
    # Old records alone are fine while the job's heartbeat is fresh (hourly data is slow).
    assert _assess(last_message_at=10.0)[0] == "ok"
    assert _assess(kafka_connected=False)[0] == "unhealthy"
    assert _assess(models={"fcvae": [], "vaegan": []})[0] == "unhealthy"
    assert _assess(models={"fcvae": [], "vaegan": ["A"]})[0] == "ok"
    assert _assess(last_message_at=10.0, last_heartbeat_at=20.0)[0] == "unhealthy"
    assert _assess(last_heartbeat_at=None)[0] == "degraded"
    assert _assess(last_heartbeat_at=800.0)[0] == "degraded"
    assert _assess(job_state="stopped")[0] == "degraded"
    # Just started and nothing yet: degraded during the grace period, unhealthy after it.
    nothing = {"last_message_at": None, "last_heartbeat_at": None, "job_state": None}
    assert _assess(started_at=950.0, **nothing)[0] == "degraded"
    status, reasons = _assess(started_at=0.0, **nothing)
    assert status == "unhealthy" and any(
        "no scored record and no job heartbeat" in r for r in reasons
    )


def _models(root: Path) -> Path:
    (root / "fcvae" / "A").mkdir(parents=True)
    (root / "fcvae" / "A" / "meta.json").write_text("{}")
    return root


def test_health_endpoint_codes(tmp_path: Path) -> None:
    clock = FakeClock()
    store = ScoredStore(history_hours=48, clock=clock)
    settings = DashboardSettings(model_path=tmp_path / "empty")
    client = create_app(settings, store).server.test_client()

    response = client.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unhealthy"
    assert body["kafka"]["connected"] is False
    assert set(body) >= {"kafka", "freshness", "job", "models", "counters"}

    store.set_kafka_state(KafkaState(connected=True, partitions=4, lag=0, last_ok_at=clock.now))
    store.add(_row("A", 0), timestamp_s=clock.now - 5)
    store.set_heartbeat(
        {
            "kind": "job_heartbeat",
            "state": "running",
            "sent_at": datetime.fromtimestamp(clock.now - 2, UTC).isoformat(),
        }
    )
    healthy = DashboardSettings(model_path=_models(tmp_path / "models"))
    body, code = health_report(store, healthy)
    assert (code, body["status"]) == (200, "ok")
    assert body["models"] == {"fcvae": ["A"], "vaegan": []}
    assert body["freshness"]["last_message_age_s"] == pytest.approx(5.0)
    assert body["freshness"]["last_heartbeat_age_s"] == pytest.approx(2.0, abs=0.01)
    assert body["job"]["state"] == "running"

    clock.now += 60  # the feed stopped reporting: Kafka counts as unreachable
    body, code = health_report(store, healthy)
    assert code == 503 and body["kafka"]["connected"] is False


def test_page_layout_starts_on_combo(tmp_path: Path) -> None:
    store = ScoredStore(history_hours=48)
    store.add(_row("Accel_CMP", 0))
    store.add(_row("Star_CMP", 0))
    app = create_app(DashboardSettings(combo="Star_CMP", model_path=tmp_path), store)
    page = app.server.test_client().get("/_dash-layout").get_json()
    text = json.dumps(page)
    assert '"id": "combo-select"' in text and '"value": "Star_CMP"' in text
    for component in (
        "series-graph",
        "score-graph",
        "overview-table",
        "recent-table",
        "flagged-table",
    ):
        assert f'"id": "{component}"' in text


def test_the_dashboard_never_imports_torch_or_spark() -> None:
    code = (
        "import sys, app.dashboard.server, app.dashboard.callbacks\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pyspark'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
