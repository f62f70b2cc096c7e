"""Real-data evaluation: the product's detectors beside strong, causal, label-free baselines.

    python -m app.evaluate_real [--data-root ../shared/realdata] [--subset default|all]
                                [--max-steps N] [--tiny] [--output-dir plots/real]

reads the labelled real series of ``../shared/realdata/`` (academic use only: they are read in
place and never copied into the repository; the per-series CSVs the product's CLIs need are
written under ``--work-dir``, ``.run/real/`` by default, which git ignores) and writes
``<output-dir>/metrics.json``, ``metrics.md``, ``run.json`` and a few PNGs.

Protocol (fixed; nothing is tuned on the test part)
---------------------------------------------------
* **WSD** (``wsd/*.csv.gz``, 1-minute steps): each series' first 30 % of its time span trains,
  the next 10 % validates, the rest is the test part.
* **KPI** (``kpi/*.csv.gz``, 5-minute steps): the file's ``train`` part trains and validates
  (its last quarter of time is validation), its ``test`` part is the test part.
* **Labels are never read** by training, calibration or thresholds: the product is trained and
  scored through its own CLIs (``app.train.main`` then ``app.score.main``, in-process, one
  model directory per series) on a CSV with no label column and with ``--label-col none``;
  labels are joined back only to compute the metrics of the test part.  Series whose values are
  all non-negative integers are passed as ``--values counts``, every other one as
  ``--values real`` (a label-blind rule).
* **Detectors**: ``product_fcvae``, ``product_vaegan`` and ``product_ensemble`` (the
  product's own decisions: each detector's calibrated score against the threshold its training
  chose, the ensemble's ``is_anomaly``; never overridden here), and the causal, label-free
  baselines ``seasonal_z`` (:class:`app.baselines.SeasonalBaseline` at the series' step),
  ``river_hst``, ``pyod_iforest`` and ``pyod_ecod`` (:mod:`app.library_baselines`).  Every
  baseline is thresholded by one **alarm budget** rule: the threshold flags at most
  ``--alarm-budget`` (0.5 %) of the validation part's steps
  (:func:`app.postprocess.threshold.threshold_for_false_alarm_rate`).
* **Metrics** on the test part's observed steps (missing steps are not scored): event
  precision / recall / F1 without point adjustment (:func:`app.evaluation.event_metrics`),
  false alarms per day, median detection delay (steps and minutes), AUPRC (an unscored step
  ranks lowest), point-adjusted F1 at the detector's own threshold, and
  ``pa_best_f1_optimistic``: the best point-adjusted F1 over thresholds **swept on the test
  scores themselves** (as the FCVAE paper reports; an upper bound, not a result).  "overall"
  pools the series of a dataset: event counts and steps are summed and the ratios recomputed;
  ``auprc`` is the mean over series (``auprc_pooled`` on the concatenated test parts), and the
  optimistic best F1 sweeps one threshold over the concatenated test parts.

Subsets: ``--subset all`` runs all 49 series; ``--subset default`` (the Makefile's) keeps the
WSD files whose number ``n`` has ``n % 20 == 0`` and all 7 KPIs, a fixed, label-blind rule that
fits the 30-minute budget of a 2-core machine.  ``--max-steps`` cuts every series to a short
slice (smoke tests).  A failing (detector, series) is recorded with ``"status": "error: ..."``
and the evaluation goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from app import PROJECT_ROOT, artifacts
from app.baselines import SeasonalBaseline
from app.catalog import ENSEMBLE, detector_names
from app.evaluation import (
    auprc,
    event_metrics,
    events_from_labels,
    point_adjusted_f1,
    point_metrics,
)
from app.library_baselines import LIBRARY_BASELINES, robust_scale
from app.postprocess.threshold import (
    DEFAULT_ALARM_BUDGET,
    DEFAULT_MAX_FLAGS_PER_DAY,
    flag_share_budget,
    threshold_for_false_alarm_rate,
)

log = logging.getLogger(__name__)

DEFAULT_DATA_ROOT = PROJECT_ROOT.parent / "shared" / "realdata"
DEFAULT_WORK_DIR = PROJECT_ROOT / ".run" / "real"
DEFAULT_OUTPUT_DIR = PROJECT_ROOT / "plots" / "real"

PRODUCT_DETECTORS = tuple(f"product_{d}" for d in (*detector_names(), ENSEMBLE))
BASELINE_DETECTORS = ("seasonal_z", *LIBRARY_BASELINES)
ALL_DETECTORS = (*PRODUCT_DETECTORS, *BASELINE_DETECTORS)


@dataclass(frozen=True)
class Dataset:
    """One dataset of ``realdata``: its folder, step and split protocol."""

    name: str
    step_seconds: int
    freq: str
    protocol: str


DATASETS: dict[str, Dataset] = {
    "wsd": Dataset(
        "wsd",
        60,
        "1min",
        "first 30 % of each series' time span = train, next 10 % = validation, rest = test",
    ),
    "kpi": Dataset(
        "kpi",
        300,
        "5min",
        "file's train part = train (its last quarter of time = validation), "
        "file's test part = test",
    ),
}
WSD_TRAIN_FRAC, WSD_VAL_FRAC = 0.30, 0.10
KPI_VAL_FRAC_OF_TRAIN = 0.25
SUBSET_RULES = {
    "all": "every series under the data root",
    "default": "WSD files whose number n has n % 20 == 0, and every KPI (label-blind)",
}


# --------------------------------------------------------------------------- series


@dataclass
class RealSeries:
    """One series on its full regular grid (missing steps are rows with NaN value)."""

    dataset: str
    name: str
    path: Path
    step_seconds: int
    grid: pd.DataFrame  # timestamp (UTC), value (NaN = missing), label, split, observed
    counts: bool
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.dataset}_{self.name}"

    def mask(self, split: str) -> NDArray[np.bool_]:
        return (self.grid["split"] == split).to_numpy()


def series_files(root: Path, datasets: Sequence[str], subset: str) -> list[tuple[str, Path]]:
    """The (dataset, file) pairs to evaluate, in a fixed order (label-blind)."""
    out: list[tuple[str, Path]] = []
    for name in datasets:
        folder = root / name
        files = sorted(folder.glob("*.csv.gz"))
        if name == "wsd":
            files = sorted(files, key=lambda p: int(p.name.split(".")[0]))
            if subset == "default":
                files = [p for p in files if int(p.name.split(".")[0]) % 20 == 0]
        out.extend((name, p) for p in files)
    return out


def _stem(path: Path) -> str:
    return path.name.removesuffix(".csv.gz").removesuffix(".csv")


def load_series(dataset: str, path: Path, max_steps: int | None = None) -> RealSeries:
    """Read one file, cut it (``max_steps``), put it on its grid and assign the splits."""
    spec = DATASETS[dataset]
    raw = pd.read_csv(path, parse_dates=["timestamp"])
    raw["timestamp"] = pd.to_datetime(raw["timestamp"], utc=True)
    raw = raw.sort_values("timestamp").reset_index(drop=True)
    notes: list[str] = []
    if dataset == "kpi":
        train, test = raw[raw["split"] == "train"], raw[raw["split"] == "test"]
        if max_steps:
            half = max_steps // 2
            train, test = train.iloc[-(max_steps - half) :], test.iloc[:half]
            notes.append(f"cut to the last {len(train)} train and first {len(test)} test rows")
        raw = pd.concat([train, test], ignore_index=True)
    elif max_steps:
        raw = raw.iloc[:max_steps].reset_index(drop=True)
        notes.append(f"cut to the first {len(raw)} rows")
    step = pd.Timedelta(seconds=spec.step_seconds)
    times = pd.date_range(raw["timestamp"].iloc[0], raw["timestamp"].iloc[-1], freq=step)
    grid = pd.DataFrame({"timestamp": times})
    grid = grid.merge(raw, on="timestamp", how="left", validate="one_to_one")
    grid["observed"] = grid["value"].notna()
    grid["label"] = grid["label"].fillna(0).astype(np.int64)
    ts = grid["timestamp"]
    if dataset == "kpi":
        origin = grid["split"].ffill()
        in_train = origin == "train"
        t0, t1 = ts[in_train].iloc[0], ts[in_train].iloc[-1]
        val = in_train & (ts >= t0 + (1 - KPI_VAL_FRAC_OF_TRAIN) * (t1 - t0))
        grid["split"] = np.where(val, "val", np.where(in_train, "train", "test"))
    else:
        frac = (ts - ts.iloc[0]) / (ts.iloc[-1] - ts.iloc[0])
        grid["split"] = np.where(
            frac < WSD_TRAIN_FRAC,
            "train",
            np.where(frac < WSD_TRAIN_FRAC + WSD_VAL_FRAC, "val", "test"),
        )
    values = grid.loc[grid["observed"], "value"].to_numpy(dtype=np.float64)
    counts = bool(values.size) and bool(
        np.all(values >= 0) and np.all(np.equal(np.floor(values), values))
    )
    return RealSeries(
        dataset=dataset,
        name=_stem(path),
        path=path,
        step_seconds=spec.step_seconds,
        grid=grid[["timestamp", "value", "label", "split", "observed"]],
        counts=counts,
        notes=notes,
    )


def write_product_csv(series: RealSeries, path: Path) -> str:
    """The CSV a user would hand the product: observed rows, no label column.  Returns its sha1."""
    rows = series.grid[series.grid["observed"]]
    out = pd.DataFrame(
        {
            "timestamp": rows["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "value": rows["value"].astype(np.int64) if series.counts else rows["value"],
            "split": rows["split"],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    text = out.to_csv(index=False)
    path.write_text(text)
    return hashlib.sha1(text.encode()).hexdigest()


# --------------------------------------------------------------------------- detectors


@dataclass
class DetectorRun:
    """Scores and flags of one detector on one series' full grid (or the error)."""

    scores: NDArray[np.float64] | None = None
    flags: NDArray[np.bool_] | None = None
    threshold: float | None = None
    expected: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
    status: str = "ok"
    elapsed_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def _error(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}: {exc}".splitlines()[0][:300]


def budget_threshold(
    scores: NDArray[np.float64],
    series: RealSeries,
    budget: float,
    per_day: float | None = DEFAULT_MAX_FLAGS_PER_DAY,
) -> tuple[float, NDArray[np.bool_]]:
    """The alarm-budget threshold on the validation part, and the flags it gives everywhere
    (the product's rule: at most ``budget`` of its steps, at most ``per_day`` a day)."""
    val = series.mask("val") & series.grid["observed"].to_numpy()
    share = flag_share_budget(budget, series.step_seconds, per_day)
    assert share is not None
    threshold = threshold_for_false_alarm_rate(scores[val], share)
    flags = np.isfinite(scores) & (scores > threshold)
    return threshold, flags


def run_seasonal(series: RealSeries) -> tuple[NDArray[np.float64], dict[str, Any]]:
    observed = series.grid["observed"].to_numpy()
    values = series.grid["value"].to_numpy(dtype=np.float64)
    if series.counts:
        eps, floor = 1.0, True
    else:  # not counts: no Poisson floor, eps in the series' own units
        _, scale = robust_scale(values[series.mask("train") & observed])
        eps, floor = 0.01 * scale, False
    baseline = SeasonalBaseline(eps=eps, poisson_floor=floor, step_seconds=series.step_seconds)
    scores = np.full(values.size, np.nan)
    scores[observed] = baseline.score(values[observed], series.grid["timestamp"][observed])
    band = baseline.band(values[observed], series.grid["timestamp"][observed], z=0.0)
    return scores, {"params": baseline.to_dict(), "_expected": band[0]}


def run_library(name: str, series: RealSeries, seed: int) -> tuple[NDArray[np.float64], dict]:
    baseline = LIBRARY_BASELINES[name](seed=seed)
    values = series.grid["value"].to_numpy(dtype=np.float64)
    day_steps = 86_400 // series.step_seconds
    scores = baseline.score(values, series.mask("train"), day_steps=day_steps)
    return scores, {"params": baseline.to_dict()}


def run_baselines(
    series: RealSeries,
    names: Sequence[str],
    budget: float,
    seed: int,
    per_day: float | None = DEFAULT_MAX_FLAGS_PER_DAY,
) -> dict[str, DetectorRun]:
    out: dict[str, DetectorRun] = {}
    for name in names:
        started = time.perf_counter()
        run = DetectorRun()
        try:
            if name == "seasonal_z":
                scores, info = run_seasonal(series)
                expected = info.pop("_expected")
                full = np.full(len(series.grid), np.nan)
                full[series.grid["observed"].to_numpy()] = expected
                run.expected = (full, full)
            else:
                scores, info = run_library(name, series, seed)
            run.scores = scores
            run.threshold, run.flags = budget_threshold(scores, series, budget, per_day)
            run.info = {**info, "threshold_rule": f"alarm budget {budget} on validation"}
        except Exception as exc:  # one failure must not stop the evaluation
            log.warning("%s on %s failed: %s", name, series.key, exc)
            log.debug("%s", traceback.format_exc())
            run.status = _error(exc)
        run.elapsed_s = time.perf_counter() - started
        out[name] = run
    return out


def _supports(module: Any, option: str) -> bool:
    parser = module.build_parser()
    return any(option in action.option_strings for action in parser._actions)


@contextlib.contextmanager
def _quiet_logs(verbose: bool) -> Iterator[None]:
    old, level = os.environ.get("LOG_LEVEL"), logging.getLogger().level
    if not verbose:
        os.environ["LOG_LEVEL"] = "WARNING"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LOG_LEVEL", None)
        else:
            os.environ["LOG_LEVEL"] = old
        logging.getLogger().setLevel(level)


def product_data_args(series: RealSeries, csv: Path, module: Any) -> list[str]:
    args = [
        "--data-path",
        str(csv),
        "--freq",
        DATASETS[series.dataset].freq,
        "--time-col",
        "timestamp",
        "--key-col",
        "none",
        "--value-col",
        "value",
        "--label-col",
        "none",
        "--event-col",
        "none",
        "--split-col",
        "split",
    ]
    if _supports(module, "--values"):
        args += ["--values", "counts" if series.counts else "real"]
    return args


def _read_decision_threshold(model_dir: Path, detector: str, combo: str) -> float:
    meta = artifacts.read_meta(model_dir, detector, combo)
    return float(meta["decision"]["threshold_calibrated"])


def _run_cli(name: str, main: Any, argv: list[str], verbose: bool) -> float:
    """Run a product CLI in-process; its seconds, or RuntimeError on a non-zero exit."""
    t0 = time.perf_counter()
    with _quiet_logs(verbose):
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"{name} exited {rc} (see its log above)")
    return round(time.perf_counter() - t0, 2)


def run_product(series: RealSeries, work: Path, args: argparse.Namespace) -> dict[str, DetectorRun]:
    """Train and score through the product's own CLIs; the three decisions on the grid."""
    from app import score as score_cli
    from app import train as train_cli

    wanted = [d for d in PRODUCT_DETECTORS if d in args.detectors]
    runs = {d: DetectorRun() for d in wanted}
    if not wanted:
        return runs
    started = time.perf_counter()
    model_dir = work / "models"
    try:
        aligned, combo, timings = _product_scores(series, work, args, train_cli, score_cli)
    except Exception as exc:
        log.warning("product on %s failed: %s", series.key, exc)
        log.debug("%s", traceback.format_exc())
        for run in runs.values():
            run.status = _error(exc)
            run.elapsed_s = time.perf_counter() - started
        return runs

    band = None
    with contextlib.suppress(KeyError):
        band = (_score_column(aligned, "expected_low"), _score_column(aligned, "expected_high"))
    for name, run in runs.items():
        try:
            _take_product_decision(run, name, aligned, model_dir, combo)
            run.info.update(timings, values="counts" if series.counts else "real")
            run.expected = band
        except Exception as exc:
            run.status = _error(exc)
        run.elapsed_s = time.perf_counter() - started
    return runs


def product_train_argv(
    series: RealSeries, csv: Path, model_dir: Path, args: argparse.Namespace, train_cli: Any
) -> list[str]:
    """``app.train``'s arguments for one series: every detector, its CSV, this run's threads,
    seed, ``--tiny``, alarm budget (where not the default) and ``--product-args``."""
    return [
        "--detector",
        "all",
        "--output-dir",
        str(model_dir),
        *product_data_args(series, csv, train_cli),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--no-progress",
        *(["--tiny"] if args.tiny else []),
        *(
            ["--alarm-budget", str(args.alarm_budget)]
            if args.alarm_budget != DEFAULT_ALARM_BUDGET
            else []
        ),
        *(
            ["--alarm-budget-per-day", str(args.alarm_budget_per_day)]
            if args.alarm_budget_per_day is not None
            else []
        ),
        *shlex.split(args.product_args or ""),
    ]


def _product_scores(
    series: RealSeries, work: Path, args: argparse.Namespace, train_cli: Any, score_cli: Any
) -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """Train and score one series with the product's CLIs under ``work`` (or reuse what an
    earlier run left there, ``--reuse``): the ``app.score`` output on the series' grid, its
    combo, and the CLIs' timings."""
    csv = work / f"{series.key}.csv"
    model_dir = work / "models"
    scores_csv = work / "scores.csv"
    stamp = work / "models.json"
    digest = write_product_csv(series, csv)
    train_argv = product_train_argv(series, csv, model_dir, args, train_cli)
    score_argv = [
        "--model-dir",
        str(model_dir),
        "--output",
        str(scores_csv),
        "--detector",
        "ensemble",
        *product_data_args(series, csv, score_cli),
    ]
    fingerprint = {"data_sha1": digest, "train_argv": train_argv[4:]}
    previous = json.loads(stamp.read_text()) if stamp.exists() else {}
    reuse = (
        args.reuse
        and scores_csv.exists()
        and {k: previous.get(k) for k in fingerprint} == fingerprint
    )
    if reuse:
        timings = {**previous.get("timings", {}), "reused": True}
    else:
        stamp.unlink(missing_ok=True)
        timings = {
            "train_s": _run_cli("app.train", train_cli.main, train_argv, args.verbose),
            "score_s": _run_cli("app.score", score_cli.main, score_argv, args.verbose),
            "trained_with": getattr(args, "git_head", "unknown"),
        }
        stamp.write_text(json.dumps({**fingerprint, "timings": timings}))
    aligned, combo = _align_scores(scores_csv, series)
    return aligned, combo, timings


def _align_scores(scores_csv: Path, series: RealSeries) -> tuple[pd.DataFrame, str]:
    """``app.score``'s output (one combo) on the series' grid, and that combo."""
    scored = pd.read_csv(scores_csv, low_memory=False)
    combos = scored["combo"].unique()
    if len(combos) != 1:
        raise RuntimeError(f"expected one combo in {scores_csv}, got {list(combos)[:5]}")
    combo = str(combos[0])
    scored["timestamp"] = pd.to_datetime(scored["timestamp"], utc=True)
    aligned = series.grid[["timestamp"]].merge(
        scored.drop_duplicates("timestamp"), on="timestamp", how="left"
    )
    return aligned, combo


def _score_column(aligned: pd.DataFrame, name: str) -> NDArray[np.float64]:
    """Column ``name`` of the aligned ``app.score`` output as floats (unparsable = NaN)."""
    if name not in aligned:
        raise KeyError(f"app.score output has no column {name!r}")
    return pd.to_numeric(aligned[name], errors="coerce").to_numpy(dtype=np.float64)


def _take_product_decision(
    run: DetectorRun, name: str, aligned: pd.DataFrame, model_dir: Path, combo: str
) -> None:
    """Fill ``run`` with product detector ``name``'s scores, threshold and flags: the
    ensemble's ``is_anomaly``, else the detector's calibrated score above the threshold its
    training chose."""
    if name == "product_ensemble":
        run.scores = _score_column(aligned, "score")
        run.threshold = float(np.nanmedian(_score_column(aligned, "threshold")))
        flags = aligned["is_anomaly"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
        run.flags = flags.to_numpy(dtype=bool)
        run.info = {"decision": "app.score --detector ensemble: is_anomaly"}
    else:
        short = name.removeprefix("product_")
        run.scores = _score_column(aligned, f"{short}_calibrated")
        run.threshold = _read_decision_threshold(model_dir, short, combo)
        run.flags = np.isfinite(run.scores) & (run.scores > run.threshold)
        run.info = {"decision": f"{short}_calibrated > meta.json decision.threshold_calibrated"}


# --------------------------------------------------------------------------- metrics


def pa_best_f1(
    scores: NDArray[np.float64], labels: NDArray[np.bool_], valid: NDArray[np.bool_]
) -> tuple[float | None, float | None]:
    """Best point-adjusted F1 over all thresholds **swept on these scores** (optimistic).

    Exact: the best threshold lies just below some event's peak score, so every such
    candidate is tried.  Returns ``(f1, threshold)``; ``(None, None)`` without labels.

    Examples
    --------
    >>> s = np.array([0.1, 0.9, 0.2, 0.3, 0.8, 0.1])
    >>> y = np.array([0, 1, 1, 0, 0, 0], bool)
    >>> pa_best_f1(s, y, np.ones(6, bool))
    (1.0, 0.9)
    """
    y = labels & valid
    positives = int(y.sum())
    if positives == 0:
        return None, None
    s = np.where(valid & np.isfinite(scores), scores, -np.inf)
    # Events as point_adjusted_f1 has them (from the labels; a missing step inside one does
    # not split it), each with its peak and size over its valid points.
    events = [(a, b) for a, b in events_from_labels(labels) if y[a : b + 1].any()]
    peaks = np.array([s[a : b + 1][y[a : b + 1]].max() for a, b in events])
    sizes = np.array([int(y[a : b + 1].sum()) for a, b in events])
    negatives = np.sort(s[valid & ~y & np.isfinite(s)])
    candidates = np.unique(peaks[np.isfinite(peaks)])
    if candidates.size == 0:
        return 0.0, None
    order = np.argsort(-peaks)
    cum_tp = np.cumsum(sizes[order])
    sorted_peaks = peaks[order]
    # For candidate c (flag s >= c): events with peak >= c are found whole.
    n_found = np.searchsorted(-sorted_peaks, -candidates, side="right")
    tp = np.where(n_found > 0, cum_tp[np.maximum(n_found - 1, 0)], 0)
    fp = negatives.size - np.searchsorted(negatives, candidates, side="left")
    f1 = 2 * tp / (2 * tp + fp + (positives - tp))
    best = int(np.argmax(f1))
    return float(f1[best]), float(candidates[best])


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def series_metrics(
    run: DetectorRun, series: RealSeries, test: NDArray[np.bool_]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics of one run on the test part, and the raw arrays for pooling."""
    assert run.scores is not None and run.flags is not None
    observed = series.grid["observed"].to_numpy()
    labels = series.grid["label"].to_numpy().astype(bool)
    scores, flags, y, valid = run.scores[test], run.flags[test], labels[test], observed[test]
    events = events_from_labels(y)
    event = event_metrics(flags, events, y, valid)
    point = point_metrics(flags, y, valid)
    n_valid = int(valid.sum())
    days = n_valid * series.step_seconds / 86_400
    ranked = np.where(np.isfinite(scores), scores, -np.inf)  # unscored = ranked lowest
    best, best_thr = pa_best_f1(scores, y, valid)
    val = series.mask("val") & observed
    minutes = series.step_seconds / 60
    delay = _median(event["delays"])
    metrics = {
        "status": run.status,
        "elapsed_s": round(run.elapsed_s, 2),
        "event": {
            k: event[k]
            for k in ("precision", "recall", "f1", "n_events", "detected", "false_alarms")
        },
        "point": {k: point[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn")},
        "false_alarms_per_day": None if days <= 0 else event["false_alarms"] / days,
        "median_delay_steps": delay,
        "median_delay_minutes": None if delay is None else delay * minutes,
        "auprc": auprc(ranked, y, valid),
        "pa_f1": point_adjusted_f1(flags, y, valid=valid),
        "pa_best_f1_optimistic": best,
        "pa_best_threshold_optimistic": best_thr,
        "threshold": run.threshold,
        "n_test_steps": n_valid,
        "n_unscored_test_steps": int((valid & ~np.isfinite(scores)).sum()),
        "test_days": days,
        "n_flagged_test": int((flags & valid).sum()),
        "val_flag_rate": float(run.flags[val].mean()) if val.any() else None,
        "flags_sha1": hashlib.sha1(np.flatnonzero(flags & valid).tobytes()).hexdigest(),
        **{k: v for k, v in run.info.items() if not k.startswith("_")},
    }
    pooled = {
        "scores": ranked[valid],
        "labels": y[valid],
        "delays": event["delays"],
        "minutes": minutes,
        "days": days,
    }
    return metrics, pooled


def _ratios(hit: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    def r(a: int, b: int) -> float | None:
        return None if b == 0 else a / b

    return r(hit, hit + fp), r(hit, hit + fn), r(2 * hit, 2 * hit + fp + fn)


def overall_metrics(per_series: dict[str, dict[str, Any]], pooled: list[dict]) -> dict[str, Any]:
    ok = {k: m for k, m in per_series.items() if m["status"] == "ok"}
    out: dict[str, Any] = {
        "n_series": len(per_series),
        "n_ok": len(ok),
        "errors": {k: m["status"] for k, m in per_series.items() if m["status"] != "ok"},
    }
    if not ok:
        out["status"] = "error: no series evaluated"
        return out
    n_events = sum(m["event"]["n_events"] for m in ok.values())
    detected = sum(m["event"]["detected"] for m in ok.values())
    fa = sum(m["event"]["false_alarms"] for m in ok.values())
    precision, recall, f1 = _ratios(detected, fa, n_events - detected)
    tp = sum(m["point"]["tp"] for m in ok.values())
    fp = sum(m["point"]["fp"] for m in ok.values())
    fn = sum(m["point"]["fn"] for m in ok.values())
    pp, pr, pf = _ratios(tp, fp, fn)
    days = sum(p["days"] for p in pooled)
    delays = [d for p in pooled for d in p["delays"]]
    delay_minutes = [d * p["minutes"] for p in pooled for d in p["delays"]]
    auprcs = [m["auprc"] for m in ok.values() if m["auprc"] is not None]
    scores = np.concatenate([p["scores"] for p in pooled])
    labels = np.concatenate([p["labels"] for p in pooled])
    best, _ = pa_best_f1(scores, labels, np.ones(labels.size, bool))
    out.update(
        {
            "status": "ok" if len(ok) == len(per_series) else "partial",
            "event": {
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "n_events": n_events,
                "detected": detected,
                "false_alarms": fa,
            },
            "point": {"precision": pp, "recall": pr, "f1": pf, "tp": tp, "fp": fp, "fn": fn},
            "false_alarms_per_day": None if days <= 0 else fa / days,
            "median_delay_steps": _median(delays),
            "median_delay_minutes": _median(delay_minutes),
            "auprc": float(np.mean(auprcs)) if auprcs else None,
            "auprc_pooled": auprc(scores, labels),
            "pa_best_f1_optimistic": best,
            "test_days": days,
            "elapsed_s": round(sum(m["elapsed_s"] for m in per_series.values()), 2),
        }
    )
    return out


# --------------------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool | int | np.integer):
        return str(int(value))
    return f"{float(value):.{digits}f}"


_COLUMNS = [
    ("event P", lambda m: m["event"]["precision"]),
    ("event R", lambda m: m["event"]["recall"]),
    ("event F1", lambda m: m["event"]["f1"]),
    ("events", lambda m: f"{m['event']['detected']}/{m['event']['n_events']}"),
    ("false alarms/day", lambda m: m["false_alarms_per_day"]),
    ("median delay (steps)", lambda m: m["median_delay_steps"]),
    ("median delay (min)", lambda m: m["median_delay_minutes"]),
    ("AUPRC", lambda m: m["auprc"]),
    ("PA best F1 (optimistic)", lambda m: m["pa_best_f1_optimistic"]),
]


def _row(name: str, m: dict[str, Any], extra: Sequence[str] = ()) -> str:
    if m.get("status") not in ("ok", "partial"):
        cells = [m.get("status", "error")] + [""] * (len(_COLUMNS) - 1)
    else:
        cells = [v if isinstance(v := get(m), str) else _fmt(v) for _, get in _COLUMNS]
    return "| " + " | ".join([name, *cells, *extra]) + " |"


def markdown_report(metrics: dict[str, Any], run_info: dict[str, Any]) -> str:
    """``metrics.md``: how the run was made, then per dataset the overall table, event F1 per
    series and the errors."""
    lines = report_preamble(run_info)
    for dataset, detectors in metrics.items():
        lines += _overall_section(dataset, detectors)
        lines += _per_series_section(dataset, detectors)
        errors = [
            f"- {name} / {s}: {m['status']}"
            for name, result in detectors.items()
            for s, m in result["per_series"].items()
            if m["status"] != "ok"
        ]
        if errors:
            lines += [f"### {dataset}: errors", "", *errors, ""]
    return "\n".join(lines) + "\n"


def report_preamble(run_info: dict[str, Any]) -> list[str]:
    """The report's title and its list of how the run was made (data, subset, code,
    labels, thresholds, metrics), as Markdown lines."""
    return [
        "# Real-data evaluation (`python -m app.evaluate_real`)",
        "",
        f"- Data: `{run_info['data_root']}` (academic use only; read in place, never copied).",
        f"- Subset: `{run_info['subset']}` — {run_info['subset_rule']}"
        + (f"; series cut to {run_info['max_steps']} steps" if run_info["max_steps"] else "")
        + f"; {run_info['n_series']} series.",
        f"- Product code: `{run_info['git_head']}`"
        + (" (uncommitted changes in the tree)" if run_info.get("git_dirty") else "")
        + (", `--tiny` models" if run_info["tiny"] else "")
        + f"; runtime {run_info['elapsed_s']:.0f} s"
        + (
            f" (the product's models and scores of {len(run_info['product_runs_reused'])} "
            "series reused from an earlier run, `--reuse`: see their `train_s`/`score_s`; "
            "trained with: " + "; ".join(f"`{t}`" for t in run_info["product_trained_with"]) + ")."
            if run_info.get("product_runs_reused")
            else "."
        ),
        "- Labels: never read by training, calibration or thresholds (`--label-col none`, the "
        "CSV handed to the product has no label column); joined back only for these metrics.",
        f"- Baseline thresholds: alarm budget — at most {run_info['alarm_budget']:.2%} of the "
        "validation part's steps flagged"
        + (
            f" and at most {run_info['alarm_budget_per_day']:g} a day"
            if run_info.get("alarm_budget_per_day") is not None
            else ""
        )
        + ". Product thresholds: its own training's decision (the same budget).",
        (
            "- Metrics on the test part's observed steps. "
            if run_info.get("eval_part", "test") == "test"
            else "- **Metrics on the VALIDATION part's observed steps, with its labels** "
            "(`--eval-part val`: for choosing settings; not a result — the thresholds were "
            "chosen on this part). "
        )
        + "Event metrics have no point adjustment; "
        "overall pools the series (event counts summed). AUPRC: mean over series. "
        "**PA best F1 (optimistic)**: point-adjusted F1 at the best threshold swept on the "
        "test scores themselves (the FCVAE paper's number; an upper bound, not a result).",
        "",
    ]


def _overall_section(dataset: str, detectors: dict[str, Any]) -> list[str]:
    """The dataset's heading and its table of every detector's overall metrics."""
    spec = DATASETS[dataset]
    lines = [
        f"## {dataset} ({spec.step_seconds // 60}-minute steps; {spec.protocol})",
        "",
        "| detector | " + " | ".join(c for c, _ in _COLUMNS) + " | series ok |",
        "|---" * (len(_COLUMNS) + 2) + "|",
    ]
    for name, result in detectors.items():
        o = result["overall"]
        lines.append(_row(name, o, [f"{o['n_ok']}/{o['n_series']}"]))
    lines.append("")
    return lines


def _per_series_section(dataset: str, detectors: dict[str, Any]) -> list[str]:
    """A table of each series' event F1 (and false alarms a day) by detector."""
    series_names = list(dict.fromkeys(s for r in detectors.values() for s in r["per_series"]))
    lines = [
        f"### {dataset}: event F1 per series (false alarms/day in brackets)",
        "",
        "| series | " + " | ".join(detectors) + " |",
        "|---" * (len(detectors) + 1) + "|",
    ]
    for s in series_names:
        cells = []
        for result in detectors.values():
            m = result["per_series"].get(s)
            if m is None:
                cells.append("")
            elif m["status"] != "ok":
                cells.append("error")
            else:
                cells.append(f"{_fmt(m['event']['f1'])} ({_fmt(m['false_alarms_per_day'], 1)})")
        lines.append("| " + " | ".join([s, *cells]) + " |")
    lines.append("")
    return lines


def plot_series(
    series: RealSeries,
    run: DetectorRun,
    detector: str,
    path: Path,
    metrics: dict[str, Any],
    part: str = "test",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = series.mask(part)
    g = series.grid[test]
    t = g["timestamp"].dt.tz_convert(None)
    x = g["value"].to_numpy(dtype=np.float64)
    y = g["label"].to_numpy().astype(bool)
    flags = run.flags[test] if run.flags is not None else np.zeros(len(g), bool)
    fig, ax = plt.subplots(figsize=(14, 4))
    ax.plot(t, x, lw=0.5, color="0.3", label="value")
    if run.expected is not None:
        low, high = run.expected[0][test], run.expected[1][test]
        ax.fill_between(t, low, high, color="tab:blue", alpha=0.25, lw=0, label="expected band")
    for a, b in events_from_labels(y):
        ax.axvspan(t.iloc[a], t.iloc[b], color="tab:orange", alpha=0.35, lw=0)
    ax.scatter(t[flags], x[flags], s=8, color="tab:red", zorder=3, label="flagged")
    ax.plot([], [], color="tab:orange", alpha=0.5, lw=6, label="labelled anomaly")
    e = metrics["event"]
    shown = "validation" if part == "val" else "test"
    ax.set_title(
        f"{series.dataset}/{series.name} {shown} part, {detector}: event P/R/F1 "
        f"{_fmt(e['precision'])}/{_fmt(e['recall'])}/{_fmt(e['f1'])}, "
        f"{_fmt(metrics['false_alarms_per_day'], 1)} false alarms/day"
    )
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI


def _git_head() -> tuple[str, bool]:
    import subprocess

    try:
        head = subprocess.run(
            ["git", "log", "-1", "--oneline"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return head[:120], dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.evaluate_real",
        description="Evaluate the product's FCVAE, VAE+GAN and ensemble decisions beside causal, "
        "label-free baselines (seasonal robust z, River HalfSpaceTrees, PyOD IForest and ECOD) "
        "on the labelled real series of ../shared/realdata (WSD and AIOps KPI). Labels are "
        "never read by training, calibration or thresholds; they only score the test part.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Examples: `make evaluate-real` = --subset default --product-args '--epochs 5 "
        "--kl-warmup-epochs 2' (18 series, about 13-25 minutes on 2 cores); a smoke test: "
        "--series wsd/110 --max-steps 12000 --tiny.  A one-word --product-args value needs "
        "the = form: --product-args=--tiny.",
    )
    _add_series_arguments(parser)
    _add_detector_arguments(parser)
    _add_output_arguments(parser)
    _add_product_arguments(parser)
    _add_run_arguments(parser)
    return parser


def _add_series_arguments(parser: argparse.ArgumentParser) -> None:
    """Which series, from where, and how much of each."""
    parser.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="folder with wsd/ and kpi/ (read in place; never copied into the repository)",
    )
    parser.add_argument(
        "--datasets", nargs="+", choices=sorted(DATASETS), default=["wsd", "kpi"], help="datasets"
    )
    parser.add_argument(
        "--subset",
        choices=sorted(SUBSET_RULES),
        default="all",
        help="which series: "
        + "; ".join(f"{k} = {v}" for k, v in SUBSET_RULES.items()).replace("%", "%%")
        + " (ignored with --series)",
    )
    parser.add_argument(
        "--series",
        nargs="+",
        metavar="DATASET/NAME",
        default=None,
        help="only these series, e.g. wsd/20 kpi/0efb375b-b902-3661-ab23-9a0bb799f4e3",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="cut each series to this many rows (WSD: its first rows; KPI: the end of its "
        "train part and the start of its test part, half each) — for smoke tests",
    )


def _add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    """Which detectors, and the alarm budget that thresholds them."""
    parser.add_argument(
        "--detectors",
        nargs="+",
        choices=ALL_DETECTORS,
        default=list(ALL_DETECTORS),
        help="detectors to evaluate",
    )
    parser.add_argument(
        "--alarm-budget",
        type=float,
        default=DEFAULT_ALARM_BUDGET,
        help="baselines' thresholds flag at most this share of the validation part's steps",
    )
    parser.add_argument(
        "--alarm-budget-per-day",
        type=float,
        default=DEFAULT_MAX_FLAGS_PER_DAY,
        help="and at most this many flagged validation steps per day (passed to app.train "
        "too when set, so the product and the baselines share one budget)",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the work and the report go, and which part the metrics count."""
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help="per-series CSVs, models and scores (git-ignored; the data stay outside the repo)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help="metrics.json, metrics.md, run.json and PNGs",
    )
    parser.add_argument(
        "--eval-part",
        choices=("test", "val"),
        default="test",
        help="where the metrics are counted: the test part (the result), or the validation "
        "part with its labels (for choosing settings without looking at test labels; "
        "written to OUTPUT_DIR/validation unless --output-dir is given)",
    )


def _add_product_arguments(parser: argparse.ArgumentParser) -> None:
    """How the product's models are trained (``--tiny``, ``--product-args``, ``--reuse``)."""
    parser.add_argument(
        "--tiny", action="store_true", help="train the product's models with --tiny (smoke tests)"
    )
    parser.add_argument(
        "--product-args",
        default="",
        help="extra arguments for python -m app.train, as one string, e.g. '--epochs 20'",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse a series' trained models and scores when its CSV and the training "
        "arguments are unchanged",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Plots, threads, seed, progress bar and logs."""
    parser.add_argument("--plots", type=int, default=2, help="PNG plots per dataset")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=42, help="seed of every detector")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="keep the product CLIs' INFO logs")


def _select(args: argparse.Namespace) -> list[tuple[str, Path]]:
    if args.series:
        out = []
        for item in args.series:
            dataset, _, name = item.partition("/")
            if dataset not in DATASETS or not name:
                raise SystemExit(f"error: --series {item!r}: expected DATASET/NAME, e.g. wsd/20")
            path = args.data_root / dataset / f"{name}.csv.gz"
            if not path.exists():
                raise SystemExit(f"error: --series {item!r}: {path} does not exist")
            out.append((dataset, path))
        return out
    return series_files(args.data_root, args.datasets, args.subset)


def evaluate(
    args: argparse.Namespace, progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate every selected series; the metrics by dataset and detector, and how the run
    was made (``run.json``)."""
    started = time.perf_counter()
    head, dirty = _git_head()  # the code that runs (the tree may change while it runs)
    args.git_head = head + (" + uncommitted changes" if dirty else "")
    selected = _select(args)
    if not selected:
        raise SystemExit(f"error: no series found under {args.data_root}")
    per: dict[str, dict[str, dict[str, Any]]] = {}
    pooled: dict[str, dict[str, list[dict]]] = {}
    plotted: dict[str, int] = {}
    detectors = [d for d in ALL_DETECTORS if d in args.detectors]
    iterator = progress(selected) if progress else selected
    for dataset, path in iterator:
        if hasattr(iterator, "set_postfix_str"):
            iterator.set_postfix_str(f"{dataset}/{_stem(path)}")
        per.setdefault(dataset, {d: {} for d in detectors})
        pooled.setdefault(dataset, {d: [] for d in detectors})
        try:
            series = load_series(dataset, path, args.max_steps)
        except Exception as exc:
            log.warning("cannot load %s: %s", path, exc)
            for d in detectors:
                per[dataset][d][_stem(path)] = {"status": _error(exc), "elapsed_s": 0.0}
            continue
        decision = _evaluate_series(series, args, detectors, per[dataset], pooled[dataset])
        done = plotted.get(dataset, 0)
        if decision is not None and decision.status == "ok" and done < args.plots:
            shown = per[dataset]["product_ensemble"][series.name]
            if _plot_decision(series, decision, shown, args):
                plotted[dataset] = done + 1
    metrics = {
        dataset: {
            name: {
                "overall": overall_metrics(per[dataset][name], pooled[dataset][name]),
                "per_series": per[dataset][name],
            }
            for name in detectors
        }
        for dataset in per
    }
    return metrics, run_record(args, selected, detectors, per, (head, dirty), started)


def _evaluate_series(
    series: RealSeries,
    args: argparse.Namespace,
    detectors: list[str],
    per: dict[str, dict[str, Any]],
    pooled: dict[str, list[dict]],
) -> DetectorRun | None:
    """Run every detector on one series and add its metrics to ``per`` (and the arrays to
    pool to ``pooled``), both by detector; the ensemble's run, if it ran."""
    baselines = [d for d in BASELINE_DETECTORS if d in args.detectors]
    runs = run_product(series, args.work_dir / series.dataset / series.name, args)
    runs.update(
        run_baselines(series, baselines, args.alarm_budget, args.seed, args.alarm_budget_per_day)
    )
    part = series.mask(args.eval_part)
    for name in detectors:
        run = runs[name]
        if run.status == "ok":
            try:
                metrics, pool = series_metrics(run, series, part)
                pooled[name].append(pool)
            except Exception as exc:
                log.warning("metrics of %s on %s failed: %s", name, series.key, exc)
                metrics = {"status": _error(exc), "elapsed_s": round(run.elapsed_s, 2)}
        else:
            metrics = {"status": run.status, "elapsed_s": round(run.elapsed_s, 2)}
        metrics["values"] = "counts" if series.counts else "real"
        if series.notes:
            metrics["notes"] = series.notes
        per[name][series.name] = metrics
    return runs.get("product_ensemble")


def _plot_decision(
    series: RealSeries, decision: DetectorRun, shown: dict[str, Any], args: argparse.Namespace
) -> bool:
    """Plot the ensemble's decision on one series (``shown``: its metrics); whether it drew."""
    png = args.output_dir / f"{series.dataset}_{series.name}_product_ensemble.png"
    try:
        plot_series(series, decision, "product_ensemble", png, shown, args.eval_part)
    except Exception as exc:
        log.warning("plot of %s failed: %s", series.key, exc)
        return False
    return True


def run_record(
    args: argparse.Namespace,
    selected: list[tuple[str, Path]],
    detectors: list[str],
    per: dict[str, dict[str, dict[str, Any]]],
    git: tuple[str, bool],
    started: float,
) -> dict[str, Any]:
    """``run.json``: the command, data, subset, settings, code and time of the run, and
    which product runs were reused (``per``: the metrics by dataset, detector and series)."""
    head, dirty = git
    ensemble = [m for d in per for m in per[d].get("product_ensemble", {}).values()]
    reused = sorted(
        f"{d}/{s}"
        for d in per
        for s, m in per[d].get("product_ensemble", {}).items()
        if m.get("reused")
    )
    return {
        "command": "python -m app.evaluate_real " + " ".join(shlex.quote(a) for a in args.argv),
        "data_root": str(args.data_root),
        "subset": "explicit --series" if args.series else args.subset,
        "subset_rule": "--series " + " ".join(args.series)
        if args.series
        else SUBSET_RULES[args.subset],
        "series": [f"{d}/{_stem(p)}" for d, p in selected],
        "n_series": len(selected),
        "max_steps": args.max_steps,
        "eval_part": args.eval_part,
        "alarm_budget": args.alarm_budget,
        "alarm_budget_per_day": args.alarm_budget_per_day,
        "tiny": args.tiny,
        "product_args": args.product_args,
        "detectors": detectors,
        "git_head": head,
        "git_dirty": dirty,
        "product_runs_reused": reused,
        "product_trained_with": sorted(
            {str(m["trained_with"]) for m in ensemble if m.get("trained_with")}
        ),
        "elapsed_s": time.perf_counter() - started,
        "protocol": {d: DATASETS[d].protocol for d in per},
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _finite(obj: Any) -> Any:
    """NaN/inf floats -> None, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    setup_logging()
    if not args.data_root.is_dir():
        log.error("data root %s does not exist (expected ../shared/realdata)", args.data_root)
        return 2
    if not 0 < args.alarm_budget < 1:
        log.error("--alarm-budget must be in (0, 1), got %s", args.alarm_budget)
        return 2
    import torch

    torch.set_num_threads(max(1, args.threads))
    progress = None
    if not args.no_progress and os.environ.get("CI") != "true":
        from tqdm import tqdm

        def progress(items: Iterable[Any]) -> Iterable[Any]:
            return tqdm(list(items), desc="series", unit="series", dynamic_ncols=True)

    if args.eval_part == "val" and args.output_dir == DEFAULT_OUTPUT_DIR:
        args.output_dir = DEFAULT_OUTPUT_DIR / "validation"  # never overwrite the test report
    args.output_dir.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    metrics, run_info = evaluate(args, progress)
    metrics, run_info = _finite(metrics), _finite(run_info)
    (args.output_dir / "metrics.json").write_text(
        json.dumps(metrics, indent=1, default=_json_default, allow_nan=False) + "\n"
    )
    (args.output_dir / "run.json").write_text(
        json.dumps(run_info, indent=1, default=_json_default, allow_nan=False) + "\n"
    )
    (args.output_dir / "metrics.md").write_text(markdown_report(metrics, run_info))
    log.info(
        "evaluated %d series in %.0f s -> %s",
        run_info["n_series"],
        run_info["elapsed_s"],
        args.output_dir / "metrics.md",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
