"""The synthetic data generator (data/generate_transactions.py) and the committed CSV."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from app import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "data" / "generate_transactions.py"
COMMITTED = PROJECT_ROOT / "data" / "synthetic_transactions.csv"
COLUMNS = [
    "timestamp",
    "combo",
    "network",
    "txn_type",
    "count",
    "is_anomaly",
    "anomaly_type",
    "event_id",
    "split",
]
KINDS = {"spike", "dip", "ramp", "level_shift", "peak_shift"}
COMBOS = ["Accel_CMP", "Accel_nopin", "Star_CMP", "Star_nopin"]


def _load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_transactions", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _load_module()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default dataset, produced by running the script as a file (as the README says)."""
    out = tmp_path_factory.mktemp("gen") / "synthetic.csv"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "split", "--output", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Accel_CMP" in result.stderr  # the per-split summary is logged
    return out


@pytest.fixture(scope="module")
def frame(generated: Path) -> pd.DataFrame:
    df = pd.read_csv(generated, keep_default_na=False, dtype={"anomaly_type": str})
    df["ts"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def _events(df: pd.DataFrame) -> pd.DataFrame:
    labelled = df[df["is_anomaly"] == 1]
    return (
        labelled.groupby("event_id")
        .agg(
            combo=("combo", "first"),
            split=("split", "first"),
            kind=("anomaly_type", "first"),
            start=("ts", "min"),
            end=("ts", "max"),
            hours=("ts", "size"),
            n_combos=("combo", "nunique"),
            n_splits=("split", "nunique"),
            n_kinds=("anomaly_type", "nunique"),
        )
        .reset_index()
    )


def test_columns_dtypes_and_order(frame: pd.DataFrame) -> None:
    assert list(frame.columns[:-1]) == COLUMNS
    assert frame["timestamp"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z").all()
    assert pd.api.types.is_integer_dtype(frame["count"])
    assert (frame["count"] >= 0).all()
    assert set(frame["is_anomaly"].unique()) == {0, 1}
    assert set(frame["split"].unique()) == {"train", "val", "test"}
    assert sorted(frame["combo"].unique()) == COMBOS
    assert (frame["network"] + "_" + frame["txn_type"] == frame["combo"]).all()
    # sorted by combo then timestamp, no duplicates
    order = frame.sort_values(["combo", "ts"], kind="stable").index
    assert (order == frame.index).all()
    assert not frame.duplicated(["combo", "timestamp"]).any()
    normal = frame["is_anomaly"] == 0
    assert (frame.loc[normal, "anomaly_type"] == "").all()
    assert (frame.loc[normal, "event_id"] == "").all()
    assert (frame.loc[~normal, "anomaly_type"].isin(KINDS)).all()
    assert (frame.loc[~normal, "event_id"] != "").all()


def test_splits_follow_time_with_default_lengths(frame: pd.DataFrame) -> None:
    for _, series in frame.groupby("combo"):
        bounds = series.groupby("split")["ts"].agg(["min", "max"])
        assert bounds.loc["train", "max"] < bounds.loc["val", "min"]
        assert bounds.loc["val", "max"] < bounds.loc["test", "min"]
        assert series["ts"].min() == pd.Timestamp("2025-01-06", tz="UTC")
        assert bounds.loc["val", "min"] <= pd.Timestamp("2025-04-14T02:00", tz="UTC")
        assert series["ts"].max() >= pd.Timestamp("2025-06-08T21:00", tz="UTC")


def test_every_kind_in_val_and_test_for_every_combo(frame: pd.DataFrame) -> None:
    events = _events(frame)
    assert (events[["n_combos", "n_splits", "n_kinds"]] == 1).all().all()
    for combo in COMBOS:
        for split in ("val", "test"):
            mine = events[(events["combo"] == combo) & (events["split"] == split)]
            assert set(mine["kind"]) == KINDS, (combo, split)
            assert 6 <= len(mine) <= 10, (combo, split, len(mine))
            assert mine["event_id"].str.fullmatch(rf"{combo}-{split}-\d\d").all()


def test_train_is_clean(frame: pd.DataFrame) -> None:
    train = frame[frame["split"] == "train"]
    assert (train["is_anomaly"] == 0).all()
    assert (train["event_id"] == "").all()


def test_events_are_separated_by_48_hours(frame: pd.DataFrame) -> None:
    events = _events(frame)
    for _, mine in events.sort_values("start").groupby("combo"):
        clean_between = (mine["start"].iloc[1:].to_numpy() - mine["end"].iloc[:-1].to_numpy()) / (
            np.timedelta64(1, "h")
        ) - 1
        assert clean_between.min() >= 48


def test_outages_reach_near_zero_and_spikes_are_big(frame: pd.DataFrame) -> None:
    """Compare each event with the same hours one week earlier."""
    indexed = frame.set_index(["combo", "ts"])["count"]
    ratios: dict[str, list[float]] = {k: [] for k in KINDS}
    for _, event in _events(frame).iterrows():
        hours = pd.date_range(event["start"], event["end"], freq="h")
        now = indexed.reindex([(event["combo"], h) for h in hours])
        before = indexed.reindex([(event["combo"], h - pd.Timedelta("7D")) for h in hours])
        ratio = now.to_numpy() / before.to_numpy()
        ratio = ratio[np.isfinite(ratio)]  # a week earlier may be a data gap
        ratios[event["kind"]].extend([float(ratio.min()), float(ratio.max())] if ratio.size else [])
    assert min(ratios["dip"]) < 0.08  # an outage
    assert max(ratios["spike"]) > 2.3  # an obvious spike


def test_subtle_events_exist(gen: ModuleType) -> None:
    """Per combo and split: a +35-50 % two-hour spike and a -45-55 % one-hour dip."""
    plan = gen.SplitPlan(pd.Timestamp("2025-01-06", tz="UTC"))
    timestamps = pd.date_range(plan.start, periods=plan.hours, freq="h", tz="UTC")
    for profile in gen.DEFAULT_PROFILES:
        for split in ("val", "test"):
            rng = np.random.default_rng(7)
            events = gen.place_events(profile, timestamps, plan.bounds()[split], split, rng)
            spikes = [e for e in events if e.kind == "spike" and e.multipliers.max() < 1.55]
            dips = [e for e in events if e.kind == "dip" and len(e.multipliers) == 1]
            assert any(len(e.multipliers) == 2 for e in spikes)
            assert any(0.4 < e.multipliers[0] < 0.6 for e in dips)
            # every changed hour is labelled: no multiplier of exactly 1 inside an event
            assert all((e.multipliers != 1.0).all() for e in events)


def test_gaps_are_absent_rows_in_every_split(frame: pd.DataFrame) -> None:
    for (combo, split), part in frame.groupby(["combo", "split"]):
        grid = pd.date_range(part["ts"].min(), part["ts"].max(), freq="h")
        missing = grid.difference(pd.DatetimeIndex(part["ts"]))
        assert 3 <= len(missing) <= 12, (combo, split, len(missing))
        runs = np.split(np.arange(len(missing)), np.flatnonzero(np.diff(missing.asi8) > 3.6e12) + 1)
        lengths = sorted(len(r) for r in runs)
        assert lengths[0] == 1 and 3 <= lengths[-1] <= 6, (combo, split, lengths)
        # gaps keep clear of labelled events
        labelled = pd.DatetimeIndex(part.loc[part["is_anomaly"] == 1, "ts"])
        for hour in missing:
            assert labelled.empty or abs(labelled - hour).min() > pd.Timedelta("6h")


def test_file_is_small(generated: Path, frame: pd.DataFrame) -> None:
    assert generated.stat().st_size < 2 * 1024 * 1024
    assert 14_000 < len(frame) < 14_784  # 154 days x 24 h x 4 combos, less the gaps


def test_same_seed_same_bytes_other_seed_differs(
    gen: ModuleType, generated: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again.csv"
    other = tmp_path / "other.csv"
    assert gen.main(["split", "--output", str(again), "--log-level", "WARNING"]) == 0
    assert again.read_bytes() == generated.read_bytes()
    gen.main(["split", "--output", str(other), "--seed", "7", "--log-level", "WARNING"])
    assert other.read_bytes() != generated.read_bytes()


def test_committed_csv_is_up_to_date(generated: Path) -> None:
    """data/synthetic_transactions.csv is exactly what the documented command writes."""
    assert COMMITTED.exists(), "run: python data/generate_transactions.py split"
    assert COMMITTED.read_bytes() == generated.read_bytes()


def test_adding_a_combo_leaves_the_others_unchanged(gen: ModuleType) -> None:
    plan = gen.SplitPlan(pd.Timestamp("2025-03-03", tz="UTC"), 14, 20, 20)
    alone = gen.generate_dataset(plan, seed=3, profiles=gen.DEFAULT_PROFILES[:1])
    together = gen.generate_dataset(plan, seed=3, profiles=gen.DEFAULT_PROFILES)
    combo = gen.DEFAULT_PROFILES[0].combo
    pd.testing.assert_frame_equal(
        alone, together[together["combo"] == combo].reset_index(drop=True)
    )


def test_combo_streams_use_a_stable_hash(gen: ModuleType) -> None:
    a = gen.combo_rng_seed(42, "Accel_CMP").generate_state(2)
    b = gen.combo_rng_seed(42, "Accel_CMP").generate_state(2)
    c = gen.combo_rng_seed(42, "Star_CMP").generate_state(2)
    assert (a == b).all() and (a != c).any()


def test_too_short_split_is_refused(gen: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        gen.main(["split", "--output", str(tmp_path / "x.csv"), "--val-days", "5"])
    assert not (tmp_path / "x.csv").exists()


def test_daily_and_weekly_shapes_differ_per_combo(frame: pd.DataFrame) -> None:
    train = frame[frame["split"] == "train"]
    peak_hours = (
        train.groupby(["combo", train["ts"].dt.hour])["count"].mean().groupby(level=0).idxmax()
    )
    assert len({hour for _, hour in peak_hours}) >= 3
    by_dow = train.groupby(["combo", train["ts"].dt.dayofweek])["count"].mean().unstack()
    weekend_ratio = by_dow[[5, 6]].mean(axis=1) / by_dow[[0, 1, 2, 3, 4]].mean(axis=1)
    assert weekend_ratio["Star_CMP"] < 0.8 < weekend_ratio["Accel_nopin"]
    assert weekend_ratio["Star_nopin"] > 1.0
    means = train.groupby("combo")["count"].mean()
    assert 100 < means.min() < 250 and 2500 < means.max() < 4000
