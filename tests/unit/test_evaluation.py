"""Metrics on hand-made examples with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.errors import ContractError
from app.evaluation import (
    aggregate,
    auprc,
    evaluate_series,
    event_metrics,
    events_from_labels,
    flags_from_scores,
    markdown_table,
    missed_events,
    point_adjusted_f1,
    point_metrics,
)

# Two events: (2, 4) caught one step late, (8, 9) missed; one false-alarm run of 3 points.
LABELS = np.array([0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
FLAGS = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0], dtype=bool)


def test_point_metrics_counts_and_ratios() -> None:
    m = point_metrics(FLAGS, LABELS)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 3, 4)
    assert m["precision"] == pytest.approx(0.25)
    assert m["recall"] == pytest.approx(0.2)
    assert m["f1"] == pytest.approx(2 * 0.25 * 0.2 / 0.45)


def test_point_metrics_undefined_ratios_are_none() -> None:
    m = point_metrics([0, 0, 0], [0, 0, 0])
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None
    m = point_metrics([0, 0, 0], [0, 1, 0])
    assert m["precision"] is None and m["recall"] == 0.0 and m["f1"] == 0.0


def test_point_metrics_ignores_invalid_positions() -> None:
    valid = np.ones_like(LABELS)
    valid[11:14] = False  # the false-alarm run falls on missing hours
    m = point_metrics(FLAGS, LABELS, valid)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 4)


def test_point_metrics_rejects_mismatched_lengths() -> None:
    with pytest.raises(ContractError, match="length 2"):
        point_metrics([1, 0, 1], [1, 0])


def test_events_from_runs_and_ids() -> None:
    assert events_from_labels(LABELS) == [(2, 4), (8, 9)]
    assert events_from_labels([0, 0, 0]) == []
    assert events_from_labels([1, 1, 1]) == [(0, 2)]
    # Adjacent events with different ids stay apart; ids are read only where labelled.
    ids = [5, 5, 9, 9, -1, 3]
    assert events_from_labels([1, 1, 1, 1, 0, 1], ids) == [(0, 1), (2, 3), (5, 5)]


def test_event_metrics_two_events_one_caught_one_false_alarm_run() -> None:
    m = event_metrics(FLAGS, events_from_labels(LABELS), LABELS)
    assert m["n_events"] == 2
    assert m["detected"] == 1
    assert m["false_alarms"] == 1
    assert m["precision"] == 0.5
    assert m["recall"] == 0.5
    assert m["f1"] == 0.5
    assert m["delays"] == [1]


def test_event_metrics_separate_runs_and_grace() -> None:
    labels = np.zeros(12, dtype=bool)
    labels[3:5] = True
    flags = np.zeros(12, dtype=bool)
    flags[[4, 5, 6, 9, 11]] = True  # caught at 4 (delay 1), trailing 5-6, two isolated runs
    strict = event_metrics(flags, [(3, 4)], labels)
    assert strict["false_alarms"] == 3
    assert strict["delays"] == [1]
    graced = event_metrics(flags, [(3, 4)], labels, grace_steps=2)
    assert graced["false_alarms"] == 2


def test_event_metrics_valid_mask_drops_flags_and_unscorable_events() -> None:
    flags = [1, 0, 0, 0, 1, 0]
    valid = [0, 1, 1, 1, 1, 0]
    # Event (5, 5) lies entirely on an invalid hour: not counted.
    m = event_metrics(flags, [(3, 4), (5, 5)], valid=valid)
    assert (m["n_events"], m["detected"], m["false_alarms"], m["delays"]) == (1, 1, 0, [1])


def test_event_metrics_no_events_and_no_flags() -> None:
    m = event_metrics([0, 0, 0], [])
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None
    m = event_metrics([0, 1, 0], [])
    assert m["precision"] == 0.0 and m["recall"] is None and m["f1"] == 0.0


def test_event_metrics_rejects_out_of_range_events() -> None:
    with pytest.raises(ContractError, match=r"\(2, 9\)"):
        event_metrics([0, 0, 0], [(2, 9)])


def test_point_adjusted_f1_is_at_least_point_f1() -> None:
    pa = point_adjusted_f1(FLAGS, LABELS)
    assert pa is not None
    # Adjusted: event (2, 4) fully found → tp=3, fn=2, fp=3.
    assert pa == pytest.approx(6 / (6 + 3 + 2))
    assert pa >= (point_metrics(FLAGS, LABELS)["f1"] or 0.0)


def test_auprc_drops_nan_and_invalid() -> None:
    scores = [0.1, 0.9, np.nan, 0.2, 5.0]
    labels = [0, 1, 1, 0, 0]
    assert auprc(scores, labels, valid=[1, 1, 1, 1, 0]) == 1.0
    assert auprc(scores, labels) == pytest.approx(0.5)
    assert auprc([np.nan, 1.0], [1, 0]) is None


def test_flags_from_scores_is_strict_and_nan_safe() -> None:
    assert flags_from_scores([1.0, 1.5, np.nan], 1.0).tolist() == [False, True, False]


def test_evaluate_series_and_json() -> None:
    scores = np.where(FLAGS, 3.0, 0.1)
    scores[0] = np.nan
    r = evaluate_series(scores, 1.0, LABELS, step_hours=2.0)
    assert r["event"]["precision"] == 0.5 and r["event"]["recall"] == 0.5
    assert r["delay_hours_median"] == 2.0 and r["delay_hours_max"] == 2.0
    assert r["n_scored"] == 16 and r["scored_hours"] == 32.0
    assert r["false_alarms_per_day"] == pytest.approx(24 / 32)
    assert r["point_adjusted_f1"] is not None
    assert r["auprc"] is not None and 0 <= r["auprc"] <= 1
    json.dumps(r, allow_nan=False)


def test_evaluate_series_undefined_delays_are_none() -> None:
    r = evaluate_series([0.0, 0.0, 0.0], 1.0, [0, 1, 0])
    assert r["delay_hours_median"] is None and r["delay_hours_max"] is None
    assert r["auprc"] is not None
    json.dumps(r, allow_nan=False)


def test_evaluate_series_rejects_bad_threshold() -> None:
    with pytest.raises(ContractError, match="nan"):
        evaluate_series([0.0], float("nan"), [0])


def test_aggregate_pools_counts() -> None:
    a = evaluate_series(np.where(FLAGS, 3.0, 0.0), 1.0, LABELS)
    b = evaluate_series([0.0, 5.0, 0.0, 0.0], 1.0, [0, 1, 1, 0])
    o = aggregate({"a": a, "b": b})
    assert o["point"]["tp"] == a["point"]["tp"] + b["point"]["tp"]
    assert o["event"]["n_events"] == 3
    assert o["event"]["detected"] == 2
    assert o["event"]["false_alarms"] == 1
    assert o["event"]["precision"] == pytest.approx(2 / 3)
    assert o["event"]["recall"] == pytest.approx(2 / 3)
    assert sorted(o["delays_hours"]) == [0.0, 1.0]
    assert o["auprc"] == pytest.approx((a["auprc"] + b["auprc"]) / 2)
    assert o["n_scored"] == 20
    json.dumps(o, allow_nan=False)


def test_aggregate_rejects_foreign_dicts() -> None:
    with pytest.raises(ContractError, match="'x'"):
        aggregate({"x": {"point": {}}})
    with pytest.raises(ContractError):
        aggregate({})


def test_markdown_table_rows_and_none() -> None:
    r = evaluate_series([0.0, 0.0], 1.0, [0, 1])
    table = markdown_table(
        {
            "fcvae": {"per_combo": {"c1": r, "c2": r}, "overall": aggregate({"c1": r, "c2": r})},
            "seasonal_z": {"per_combo": {"c1": r}},
        }
    )
    lines = table.splitlines()
    assert lines[0].startswith("| detector | combo | event P")
    body = lines[2 : lines.index("")]
    assert len(body) == 4
    assert "**overall**" in body[2]
    assert "–" in body[0]  # undefined precision / delays
    assert "optimistic" in table


def test_missed_events_names_each_unflagged_event_and_its_shortfall() -> None:
    scores = [0.0, 2.0, 0.5, 0.7, 0.0, np.nan, 9.0, 0.2]
    labels = [0, 0, 1, 1, 0, 1, 1, 1]
    ids = ["", "", "a", "a", "", "b", "b", "c"]
    times = [f"t{i}" for i in range(8)]
    m = missed_events(scores, 1.0, events_from_labels(labels, ids), event_ids=ids, timestamps=times)
    assert [(e["event_id"], e["start_time"], e["steps"]) for e in m] == [
        ("a", "t2", 2),
        ("c", "t7", 1),
    ]
    assert m[0]["peak_score"] == 0.7 and m[0]["shortfall"] == pytest.approx(0.3)
    # an invalid flag does not catch an event, and an event with no valid point is not listed
    valid = [True, True, True, True, True, True, False, False]
    m = missed_events(scores, 1.0, events_from_labels(labels, ids), valid, event_ids=ids)
    assert [e["event_id"] for e in m] == ["a", "b"]
    assert m[1]["peak_score"] is None and m[1]["shortfall"] is None  # only a NaN score left


def test_missed_events_travel_into_the_overall_result_and_the_table() -> None:
    r = evaluate_series(
        [0.0, 3.0, 0.0],
        1.0,
        [1, 0, 0],
        event_ids=["x", "", ""],
        timestamps=["2025-05-20 08:00", "b", "c"],
    )
    assert r["missed_events"][0]["event_id"] == "x"
    json.dumps(r, allow_nan=False)
    overall = aggregate({"c1": r, "c2": evaluate_series([5.0], 1.0, [1])})
    assert [(m["combo"], m["event_id"]) for m in overall["missed_events"]] == [("c1", "x")]
    table = markdown_table({"fcvae": {"per_combo": {"c1": r}, "overall": overall}})
    row = [line for line in table.splitlines() if "| x |" in line]
    assert row == ["| fcvae | c1 | x | 2025-05-20 08:00 | 1 | 0.00 | 1.00 | 1.00 |"]
