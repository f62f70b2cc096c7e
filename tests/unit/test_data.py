"""Loading CSVs of counts onto a regular grid (app/data.py) and its small helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app import PROJECT_ROOT
from app.data import (
    FRAME_COLUMNS,
    ColumnSpec,
    check_min_length,
    load_counts,
    parse_freq,
    series_by_combo,
    sliding_windows,
    split_frame,
)
from app.errors import ContractError, DataError
from app.evaluation import events_from_labels


def write(tmp_path: Path, text: str, name: str = "counts.csv") -> Path:
    path = tmp_path / name
    path.write_text(text.strip() + "\n")
    return path


def hourly_csv(tmp_path: Path, rows: list[tuple[str, str, object]], header: str = "") -> Path:
    header = header or "timestamp,combo,count"
    body = "\n".join(",".join(str(x) for x in row) for row in rows)
    return write(tmp_path, f"{header}\n{body}")


def test_regular_grid_with_missing_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
timestamp,combo,count,is_anomaly,anomaly_type,event_id,split
2025-01-06T00:00:00Z,A,10,0,,,train
2025-01-06T01:00:00Z,A,12,0,,,train
2025-01-06T04:00:00Z,A,15,1,spike,A-val-01,val
2025-01-06T05:00:00Z,A,0,0,,,val
2025-01-06T06:00:00Z,A,11,0,,,test
2025-01-06T02:00:00Z,B,7,0,,,train
2025-01-06T03:00:00Z,B,8,0,,,validation
""",
    )
    df = load_counts(path)
    assert list(df.columns) == list(FRAME_COLUMNS)
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert df["value"].dtype == np.float64
    assert df["missing"].dtype == bool and df["is_anomaly"].dtype == bool
    a = df[df["combo"] == "A"].reset_index(drop=True)
    assert len(a) == 7  # 00:00 .. 06:00
    assert a["missing"].tolist() == [False, False, True, True, False, False, False]
    assert a["value"].isna().tolist() == a["missing"].tolist()  # NaN, never zero
    assert a.loc[5, "value"] == 0.0 and not a.loc[5, "missing"]  # a real zero stays
    # gap hours take the split of the step before them; the labelled hour keeps its labels
    assert a["split"].tolist() == ["train"] * 4 + ["val", "val", "test"]
    assert a.loc[4, "is_anomaly"] and a.loc[4, "event_id"] == "A-val-01"
    assert a.loc[4, "anomaly_type"] == "spike"
    assert a.loc[2, "event_id"] == "" and not a.loc[2, "is_anomaly"]
    b = df[df["combo"] == "B"]
    assert b["split"].tolist() == ["train", "val"]  # "validation" accepted
    assert df.attrs["split_source"] == "file"
    assert df["combo"].tolist() == sorted(df["combo"])


def test_half_hour_frequency(tmp_path: Path) -> None:
    times = ["2025-01-06T00:00:00Z", "2025-01-06T00:30:00Z", "2025-01-06T01:30:00Z"]
    path = hourly_csv(tmp_path, [(t, "A", 5) for t in times])
    df = load_counts(path, freq="30min")
    assert len(df) == 4
    assert df["missing"].tolist() == [False, False, True, False]
    assert df["timestamp"].iloc[2] == pd.Timestamp("2025-01-06T01:00", tz="UTC")
    with pytest.raises(ContractError, match=r"00:30:00.*not on the freq='1h' grid"):
        load_counts(path, freq="1h")


def test_other_column_names_via_columnspec(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
when;series;n;anom
2025-01-06 00:00:00;x;1;0
2025-01-06 01:00:00;x;2;true
2025-01-06 02:00:00;x;3;0
""".replace(";", ","),
    )
    spec = ColumnSpec(time="when", key="series", value="n", label="anom")
    df = load_counts(path, spec)
    assert df["combo"].unique().tolist() == ["x"]
    assert df["value"].tolist() == [1.0, 2.0, 3.0]
    assert df["is_anomaly"].tolist() == [False, True, False]
    assert (df["event_id"] == "").all() and (df["anomaly_type"] == "").all()
    # a renamed optional column that is absent is an error, not silently "no labels"
    with pytest.raises(ContractError, match=r"'is_bad' \(ColumnSpec.label\) is not in the file"):
        load_counts(path, ColumnSpec(time="when", key="series", value="n", label="is_bad"))
    # None switches a present column off
    off = load_counts(path, ColumnSpec(time="when", key="series", value="n", label=None))
    assert not off["is_anomaly"].any()
    with pytest.raises(ContractError, match=r"'count' \(ColumnSpec.value\).*\['when'"):
        load_counts(path, ColumnSpec(time="when", key="series"))


def test_single_series_without_key_column(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,count\n2025-01-06T00:00Z,1\n2025-01-06T01:00Z,2", "shop.csv")
    df = load_counts(path, ColumnSpec(key=None))
    assert df["combo"].unique().tolist() == ["shop"]


def test_no_split_column_cuts_70_15_15_by_time_per_series(tmp_path: Path) -> None:
    start = pd.Timestamp("2025-01-06", tz="UTC")
    rows = [(start + pd.Timedelta(hours=i), "A", i) for i in range(100)]
    rows += [(start + pd.Timedelta(hours=50 + i), "B", i) for i in range(20)]
    fmt = [(t.strftime("%Y-%m-%dT%H:%M:%SZ"), c, v) for t, c, v in rows]
    df = load_counts(hourly_csv(tmp_path, fmt))
    a = df[df["combo"] == "A"]
    assert a["split"].tolist() == ["train"] * 70 + ["val"] * 15 + ["test"] * 15
    assert a.loc[a["split"] == "val", "value"].min() == 70  # by time, not by row order
    b = df[df["combo"] == "B"]
    assert b["split"].value_counts().to_dict() == {"train": 14, "val": 3, "test": 3}
    assert df.attrs["split_source"] == "fractions"
    custom = load_counts(hourly_csv(tmp_path, fmt), train_frac=0.5, val_frac=0.25)
    assert (custom[custom["combo"] == "A"]["split"] == "train").sum() == 50
    with pytest.raises(ValueError, match="train_frac"):
        load_counts(hourly_csv(tmp_path, fmt), train_frac=0.9, val_frac=0.2)


def test_timezones_are_converted_and_naive_means_utc(tmp_path: Path) -> None:
    rows = [
        ("2025-01-06T02:00:00+02:00", "A", 1),
        ("2025-01-06 01:00:00", "A", 2),  # naive after zoned: still UTC
        ("2025-01-05T21:00:00-05:00", "A", 3),
        ("2025-01-06T03:00:00.000Z", "A", 4),
        ("2025/01/06 04:00", "A", 5),
    ]
    df = load_counts(hourly_csv(tmp_path, rows))
    hours = pd.date_range("2025-01-06", periods=5, freq="h", tz="UTC")
    assert df["timestamp"].tolist() == hours.tolist()
    assert df["value"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_duplicates_are_refused_with_lines(tmp_path: Path) -> None:
    rows = [("2025-01-06T00:00:00Z", "A", 1), ("2025-01-06T01:00:00Z", "A", 2)]
    rows.append(("2025-01-06T01:00:00+00:00", "A", 3))
    with pytest.raises(ContractError, match=r"duplicate rows for combo 'A' at 2025-01-06T01:00.*"
                       r"lines \[3, 4\]"):  # fmt: skip
        load_counts(hourly_csv(tmp_path, rows))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-3", r"line 3: count '-3' \(combo 'A', 2025-01-06T01:00:00\+00:00\) is negative"),
        ("lots", r"line 3: count 'lots' \(combo 'A'.*is not a finite number"),
        ("inf", r"'inf'.*is not a finite number"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, value: str, message: str) -> None:
    rows = [("2025-01-06T00:00:00Z", "A", 1), ("2025-01-06T01:00:00Z", "A", value)]
    with pytest.raises(ContractError, match=message):
        load_counts(hourly_csv(tmp_path, rows))


def test_empty_value_is_a_missing_step(tmp_path: Path) -> None:
    rows = [("2025-01-06T00:00:00Z", "A", 1), ("2025-01-06T01:00:00Z", "A", "")]
    rows.append(("2025-01-06T02:00:00Z", "A", 4))
    df = load_counts(hourly_csv(tmp_path, rows))
    assert df["missing"].tolist() == [False, True, False]


def test_bad_timestamp_label_and_split_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"line 2: timestamp 'yesterday'.*combo 'A'"):
        load_counts(hourly_csv(tmp_path, [("yesterday", "A", 1)]))
    header = "timestamp,combo,count,is_anomaly,split"
    bad_label = [("2025-01-06T00:00:00Z", "A", 1, "maybe", "train")]
    with pytest.raises(ContractError, match=r"label 'maybe'"):
        load_counts(hourly_csv(tmp_path, bad_label, header))
    bad_split = [("2025-01-06T00:00:00Z", "A", 1, 0, "holdout")]
    with pytest.raises(ContractError, match=r"split 'holdout'"):
        load_counts(hourly_csv(tmp_path, bad_split, header))
    backwards = [
        ("2025-01-06T00:00:00Z", "A", 1, 0, "val"),
        ("2025-01-06T01:00:00Z", "A", 1, 0, "train"),
    ]
    with pytest.raises(
        ContractError, match=r"combo 'A' is 'train' at 2025-01-06T01:00.*after 'val'"
    ):
        load_counts(hourly_csv(tmp_path, backwards, header))


def test_empty_files_and_bad_freq(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="is empty"):
        load_counts(write(tmp_path, ""))
    with pytest.raises(ContractError, match="no rows"):
        load_counts(write(tmp_path, "timestamp,combo,count"))
    with pytest.raises(ValueError, match="fixed"):
        parse_freq("MS")
    with pytest.raises(ValueError, match="not a pandas frequency"):
        parse_freq("often")
    assert parse_freq("5min") == pd.Timedelta(minutes=5)


def test_too_short_series_names_the_combo(tmp_path: Path) -> None:
    start = pd.Timestamp("2025-01-06", tz="UTC")
    rows = [((start + pd.Timedelta(hours=i)).isoformat(), "long", 1) for i in range(200)]
    rows += [((start + pd.Timedelta(hours=i)).isoformat(), "tiny", 1) for i in range(30)]
    df = load_counts(hourly_csv(tmp_path, rows))
    assert check_min_length(df, window=10, min_train_points=20) == {"long": 140, "tiny": 21}
    with pytest.raises(DataError, match=r"'tiny' has 21 steps of observed train data") as info:
        check_min_length(df, window=24, min_train_points=100)
    assert "'long'" not in str(info.value)
    with pytest.raises(DataError, match=r"'tiny'.*at least 30"):
        check_min_length(df, window=30, min_train_points=5)
    with pytest.raises(DataError, match=r"at least 30 .*; try fewer reference weeks$"):
        check_min_length(df, window=30, min_train_points=5, hint="try fewer reference weeks")
    # missing steps do not count
    gappy = df.copy()
    gappy.loc[(gappy["combo"] == "long") & (gappy.index % 2 == 0), "missing"] = True
    with pytest.raises(DataError, match=r"'long' has 70"):
        check_min_length(gappy, window=24, min_train_points=100)


def test_sliding_windows_end_at_their_row() -> None:
    values = np.arange(10, dtype=np.float32)
    windows = sliding_windows(values, 4)
    assert windows.shape == (7, 4) and windows.dtype == np.float32
    t = 6  # the window ending at index t is row t - window + 1
    assert windows[t - 4 + 1].tolist() == [3.0, 4.0, 5.0, 6.0]
    assert sliding_windows(values, 11).shape == (0, 11)
    with pytest.raises(ValueError, match="1-D"):
        sliding_windows(values.reshape(2, 5), 2)
    with pytest.raises(ValueError, match="window"):
        sliding_windows(values, 0)


def test_events_from_labels_runs_and_ids() -> None:
    labels = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    assert events_from_labels(labels) == [(1, 2), (5, 5), (7, 9)]
    # an event id spans a gap (index 6 is an unlabelled missing hour inside event "e2")
    ids = ["", "e1", "e1", "", "", "e2", "", "e2", "e2", "e2"]
    assert events_from_labels(labels, ids) == [(1, 2), (5, 9)]
    # labelled steps without an id fall back to runs; None/NaN mean no id
    mixed = np.array([None, "e1", "e1", None, None, np.nan, None, "", "", ""], dtype=object)
    assert events_from_labels(labels, mixed) == [(1, 2), (5, 5), (7, 9)]
    assert events_from_labels(np.zeros(5, dtype=bool)) == []
    with pytest.raises(ContractError, match="shape"):
        events_from_labels(labels, ids[:3])


def test_split_frame_and_series_by_combo(tmp_path: Path) -> None:
    start = pd.Timestamp("2025-01-06", tz="UTC")
    rows = [((start + pd.Timedelta(hours=i)).isoformat(), c, i) for c in "BA" for i in range(20)]
    df = load_counts(hourly_csv(tmp_path, rows))
    train = split_frame(df, "train")
    assert set(train["split"]) == {"train"} and len(train) == 28
    assert len(split_frame(df, "valid")) == 6 and len(split_frame(df, "all")) == 40
    with pytest.raises(ValueError, match="'dev'"):
        split_frame(df, "dev")
    per_combo = series_by_combo(df)
    assert list(per_combo) == ["A", "B"]
    assert per_combo["B"]["timestamp"].is_monotonic_increasing
    assert per_combo["B"].index.tolist() == list(range(20))


def test_loads_the_shipped_dataset() -> None:
    path = PROJECT_ROOT / "data" / "synthetic_transactions.csv"
    raw = pd.read_csv(path)
    df = load_counts(path)
    assert sorted(df["combo"].unique()) == ["Accel_CMP", "Accel_nopin", "Star_CMP", "Star_nopin"]
    assert len(df) == 4 * 154 * 24  # every hour of every combo is on the grid
    assert int(df["missing"].sum()) == len(df) - len(raw)
    assert int(df["is_anomaly"].sum()) == int(raw["is_anomaly"].sum())
    for _, series in series_by_combo(df).items():
        assert (series["timestamp"].diff().dropna() == pd.Timedelta("1h")).all()
        test = split_frame(series, "test")
        events = events_from_labels(test["is_anomaly"].to_numpy(), test["event_id"].to_numpy())
        assert len(events) == test.loc[test["is_anomaly"], "event_id"].nunique()
