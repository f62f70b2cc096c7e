"""Smoke test of ``python -m app.evaluate_real`` on two tiny slices of the real data.

Skipped when ``../shared/realdata`` is absent (the data are academic-use only and never live in
the repository).  The slices are copied into pytest's temporary folder, outside the repository.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app import PROJECT_ROOT
from app.evaluate_real import ALL_DETECTORS, load_series, main, pa_best_f1

DATA_ROOT = PROJECT_ROOT.parent / "shared" / "realdata"
WSD = "110"  # integer-valued, labelled segments inside its first 12,000 steps
KPI = "0efb375b-b902-3661-ab23-9a0bb799f4e3"
MAX_STEPS = {"wsd": 12_000, "kpi": 4_000}

needs_data = pytest.mark.skipif(
    not (DATA_ROOT / "wsd").is_dir() or not (DATA_ROOT / "kpi").is_dir(),
    reason=f"real data not available at {DATA_ROOT} (academic use only, not in the repo)",
)


def _copy(root: Path, dataset: str, name: str, relabel: bool) -> None:
    """A slice of one file under ``root``; ``relabel`` moves the test part's labels."""
    source = DATA_ROOT / dataset / f"{name}.csv.gz"
    series = load_series(dataset, source, MAX_STEPS[dataset])
    raw = pd.read_csv(source, dtype=str)
    keep = pd.to_datetime(raw["timestamp"], utc=True).isin(series.grid["timestamp"])
    raw = raw[keep.to_numpy()].reset_index(drop=True)
    if relabel:
        times = pd.to_datetime(raw["timestamp"], utc=True)
        test_times = series.grid.loc[series.mask("test"), "timestamp"]
        in_test = times.isin(test_times).to_numpy()
        labels = np.zeros(int(in_test.sum()), dtype=np.int64)
        labels[len(labels) // 2 : len(labels) // 2 + 20] = 1  # one new event, the rest gone
        raw.loc[in_test, "label"] = labels.astype(str)
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{name}.csv.gz", "wt") as handle:
        raw.to_csv(handle, index=False)


def _run(root: Path, work: Path, out: Path, *extra: str) -> dict[str, Any]:
    argv = [
        "--data-root",
        str(root),
        "--series",
        f"wsd/{WSD}",
        f"kpi/{KPI}",
        "--max-steps",
        str(max(MAX_STEPS.values())),
        "--tiny",
        "--threads",
        "1",
        "--no-progress",
        "--plots",
        "1",
        "--work-dir",
        str(work),
        "--output-dir",
        str(out),
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@needs_data
@pytest.mark.timeout(240)
def test_cli_on_two_tiny_slices_labels_never_set_thresholds(tmp_path: Path) -> None:
    original, relabelled = tmp_path / "data", tmp_path / "relabelled"
    for root, relabel in ((original, False), (relabelled, True)):
        _copy(root, "wsd", WSD, relabel)
        _copy(root, "kpi", KPI, relabel)
    work = tmp_path / "work"
    first = _run(original, work, tmp_path / "out1")

    # Shape: dataset -> detector -> overall / per_series, every detector with numbers.
    assert set(first) == {"wsd", "kpi"}
    for dataset, detectors in first.items():
        assert set(detectors) == set(ALL_DETECTORS), dataset
        for name, result in detectors.items():
            overall = result["overall"]
            assert overall["status"] == "ok", (dataset, name, overall.get("errors"))
            for key in ("precision", "recall", "f1"):
                assert key in overall["event"]
            for key in ("false_alarms_per_day", "auprc", "pa_best_f1_optimistic"):
                assert _number(overall[key]), (dataset, name, key, overall[key])
            assert _number(overall["event"]["f1"]), (dataset, name)
            assert "median_delay_steps" in overall and "median_delay_minutes" in overall
            (series,) = result["per_series"].values()
            assert series["status"] == "ok" and _number(series["threshold"])
            assert _number(series["elapsed_s"])
    report = (tmp_path / "out1" / "metrics.md").read_text().splitlines()
    assert sum(line.startswith("| product_ensemble |") for line in report) == 2  # 1 per dataset
    assert list((tmp_path / "out1").glob("*.png"))

    # The CSV the product trained on carries no label column.
    csv = work / "wsd" / WSD / f"wsd_{WSD}.csv"
    assert "label" not in pd.read_csv(csv, nrows=1).columns

    # Relabelling the test part changes the metrics, never a threshold or a flag.  The
    # product's input CSV is unchanged (it has no labels), so --reuse reuses its models.
    second = _run(relabelled, work, tmp_path / "out2", "--reuse")
    changed = False
    for dataset, detectors in first.items():
        for name, result in detectors.items():
            a = result["per_series"]
            b = second[dataset][name]["per_series"]
            for s in a:
                for key in ("threshold", "flags_sha1", "n_flagged_test", "val_flag_rate"):
                    assert a[s][key] == b[s][key], (dataset, name, s, key)
                changed |= a[s]["event"] != b[s]["event"] or a[s]["auprc"] != b[s]["auprc"]
            if name.startswith("product_"):
                assert all(m.get("reused") for m in b.values()), (dataset, name)
    assert changed

    # --eval-part val counts the same flags on the validation part (for choosing settings).
    val = _run(original, work, tmp_path / "val", "--reuse", "--eval-part", "val")
    for dataset, detectors in first.items():
        for name, result in detectors.items():
            for s, m in result["per_series"].items():
                v = val[dataset][name]["per_series"][s]
                assert v["threshold"] == m["threshold"] and v["n_test_steps"] < m["n_test_steps"]
    assert "VALIDATION part" in (tmp_path / "val" / "metrics.md").read_text()


def test_pa_best_f1_is_the_best_over_every_threshold() -> None:
    from app.evaluation import point_adjusted_f1

    rng = np.random.default_rng(0)
    y = np.zeros(300, dtype=bool)
    for start in (20, 90, 150, 260):
        y[start : start + rng.integers(1, 12)] = True
    s = rng.normal(size=300) + 1.5 * y
    valid = rng.random(300) > 0.05
    best, threshold = pa_best_f1(s, y, valid)
    brute = max(point_adjusted_f1(s >= t, y, valid=valid) or 0.0 for t in np.unique(s[valid & y]))
    assert best == pytest.approx(brute)
    assert point_adjusted_f1(s >= threshold, y, valid=valid) == pytest.approx(best)


def test_data_root_absent_is_a_clean_error(tmp_path: Path) -> None:
    assert main(["--data-root", str(tmp_path / "missing"), "--no-progress"]) == 2


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--subset" in text and "n % 20 == 0" in text and "--alarm-budget" in text


@needs_data
def test_splits_follow_the_protocol() -> None:
    wsd = load_series("wsd", DATA_ROOT / "wsd" / f"{WSD}.csv.gz")
    shares = wsd.grid["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.30, abs=0.01)
    assert shares["val"] == pytest.approx(0.10, abs=0.01)
    kpi = load_series("kpi", DATA_ROOT / "kpi" / f"{KPI}.csv.gz")
    raw = pd.read_csv(DATA_ROOT / "kpi" / f"{KPI}.csv.gz")
    assert (kpi.grid["split"] == "test").sum() == (raw["split"] == "test").sum()
    train_part = kpi.grid["split"].isin(["train", "val"])
    assert (kpi.grid.loc[train_part, "split"] == "val").mean() == pytest.approx(0.25, abs=0.01)
    assert not kpi.counts and wsd.counts
