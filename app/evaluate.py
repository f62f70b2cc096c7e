"""Evaluate the trained detectors and the seasonal baseline on the test split.

    python -m app.evaluate detailed --model-dir models --output-dir plots/eval

Scores every test hour causally through the stream's own code path (``advance`` →
batched scorer, the same per-hour seeds), with thresholds taken from the artifacts
(chosen on validation).  The baseline's threshold is chosen the same way on
validation.  Writes ``metrics.json``, ``metrics.md`` and PNG plots per combo.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from app import PROJECT_ROOT
from app.artifacts import model_root
from app.catalog import DETECTORS, ENSEMBLE, PRIMARY
from app.cli_common import add_data_arguments, load_from_args
from app.config import DEFAULT_MAX_GAP_HOURS
from app.errors import AnomalyError, DataError
from app.evaluation import aggregate, evaluate_series, markdown_table
from app.pipeline import DEFAULT_N_INJECT, ComboSeries, baseline_positions, calibrate_scores
from app.postprocess.decision import Decision
from app.registry import ComboBundle, ModelRegistry
from app.scoring import score_frame
from app.timebase import TimeBase

log = logging.getLogger(__name__)


def score_test(
    frame: pd.DataFrame, registry: ModelRegistry, window: int, max_gap: int
) -> pd.DataFrame:
    """Scored records for every step from shortly before the test split to its end
    (``window`` in steps, ``max_gap`` in hours)."""
    tb = TimeBase(int(frame.attrs.get("step_seconds", 3600)))
    gap_steps = tb.hours_to_steps(max_gap)
    parts = []
    for _, series in frame.groupby("combo", sort=True):
        test = series[series["split"] == "test"]
        if test.empty:
            continue
        start = test["timestamp"].min() - tb.duration(window + gap_steps + 2 * tb.day)
        parts.append(series[series["timestamp"] >= start])
    context = pd.concat(parts, ignore_index=True)
    return score_frame(
        context,
        registry,
        window=window,
        max_gap_steps=gap_steps,
        step_seconds=tb.step_seconds,
    )


def evaluate(
    frame: pd.DataFrame,
    root: Path,
    *,
    detector: str = ENSEMBLE,
    seed: int = 42,
    max_gap: int = DEFAULT_MAX_GAP_HOURS,
    n_inject: int = DEFAULT_N_INJECT,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics per detector (each alone, the ensemble when trained, the baseline)."""
    registry = ModelRegistry(root, detector=detector)
    combos = evaluated_combos(frame, registry, root)
    frame = frame[frame["combo"].isin(combos)]
    window = registry.window()
    scored = score_test(frame, registry, window, max_gap)
    used = registry.effective_detector()

    columns = score_columns(used)
    per: dict[str, dict[str, Any]] = {name: {} for name in [*columns, "seasonal_baseline"]}
    rows = []
    for combo in combos:
        series = ComboSeries.from_frame(frame, combo)
        bundle = registry.bundle(combo)
        test_pos = series.positions("test")
        got = scored[scored["combo"] == combo].set_index("timestamp")
        got = got.reindex(series.timestamps[test_pos])
        test_metrics = _test_metrics(series, test_pos, got)
        thresholds = decision_thresholds(bundle)
        for name, (column, _) in columns.items():
            scores = got[column].to_numpy(dtype=np.float64)
            per[name][combo] = test_metrics(scores, float(thresholds[name]))
        decision = baseline_decision(series, bundle, seed=seed, n_inject=n_inject)
        if decision is not None:
            base = decision.calibrate(baseline_positions(series, series.values, test_pos)[test_pos])
            base_threshold = decision.threshold
            per["seasonal_baseline"][combo] = test_metrics(base, base_threshold)
        else:
            base, base_threshold = np.full(len(test_pos), np.nan), np.nan
        rows.append(combo_test_rows(series, test_pos, got, base, base_threshold))
    metrics: dict[str, Any] = {
        name: {"per_combo": values, "overall": aggregate(values)}
        for name, values in per.items()
        if values  # the baseline may have had too little history everywhere
    }
    metrics["_meta"] = {
        "split": "test",
        "decision_detector": used,
        "thresholds": "chosen on validation only",
        "combos": combos,
    }
    return metrics, pd.concat(rows, ignore_index=True)


def evaluated_combos(frame: pd.DataFrame, registry: ModelRegistry, root: Path) -> list[str]:
    """The data's combos that have a trained model under ``root``, sorted (a warning names
    the others; none at all is an ``AnomalyError``)."""
    combos = [c for c in sorted(frame["combo"].unique()) if c in registry.combos()]
    missing = sorted(set(frame["combo"].unique()) - set(combos))
    if missing:
        log.warning("no trained model for %s under %s: not evaluated", missing, root)
    if not combos:
        raise AnomalyError(f"no trained model under {root} matches the data's combos")
    return combos


def score_columns(used: str) -> dict[str, tuple[str, str | None]]:
    """The stream output's score (and threshold) column of each decision evaluated: every
    detector and the ensemble when ``used`` is the ensemble, else the primary alone.

    Examples
    --------
    >>> score_columns("fcvae")
    {'fcvae': ('fcvae_calibrated', None)}
    """
    names = list(DETECTORS) if used == ENSEMBLE else [PRIMARY]
    columns: dict[str, tuple[str, str | None]] = {n: (f"{n}_calibrated", None) for n in names}
    if used == ENSEMBLE:
        columns[ENSEMBLE] = ("score", "threshold")
    return columns


def decision_thresholds(bundle: ComboBundle) -> dict[str, float]:
    """Each detector's threshold (and the ensemble's, when it has one) from the artifacts."""
    thresholds = {name: d.threshold for name, d in bundle.decisions.items()}
    if bundle.ensemble is not None:
        thresholds[ENSEMBLE] = bundle.ensemble.threshold
    return thresholds


def _test_metrics(
    series: ComboSeries, test_pos: NDArray[np.int64], got: pd.DataFrame
) -> Callable[[NDArray[np.float64], float], dict[str, Any]]:
    """``evaluate_series`` on the combo's test split (its labels, events, scored steps,
    times and step), left to apply to scores and a threshold."""
    return partial(
        evaluate_series,
        labels=series.labels[test_pos],
        event_ids=series.event_ids[test_pos],
        valid=(got["status"] == "scored").to_numpy(),
        timestamps=[t.isoformat() for t in pd.DatetimeIndex(series.timestamps[test_pos])],
        step_hours=series.step_seconds / 3600,
    )


def baseline_decision(
    series: ComboSeries, bundle: ComboBundle, *, seed: int, n_inject: int
) -> Decision | None:
    """The seasonal baseline's calibration and threshold, chosen on validation as the
    primary detector's were; None where the baseline cannot be fitted (logged)."""

    def base_fn(values: Any, positions: Any) -> Any:
        return baseline_positions(series, values, positions)

    # The baseline's threshold is chosen the way the FCVAE's was (artifacts from before
    # the copies and tie rule were recorded used one copy and the highest threshold).
    rule = bundle.decisions[PRIMARY].record
    try:
        decision, _ = calibrate_scores(
            base_fn,
            series,
            seed=seed,
            n_inject=n_inject,
            copies=int(rule.get("n_injected_copies", 1)),
            ties=rule.get("ties", "highest"),
            events_per_week=rule.get("expected_events_per_week"),
        )
    except DataError as exc:  # e.g. too little history for its seasonal reference
        log.warning("combo=%s: seasonal baseline not evaluated: %s", series.combo, exc)
        return None
    return decision


def combo_test_rows(
    series: ComboSeries,
    test_pos: NDArray[np.int64],
    got: pd.DataFrame,
    base: NDArray[np.float64],
    base_threshold: float,
) -> pd.DataFrame:
    """One row per test step of the combo: value, label, the stream's output (``got``) and
    the baseline's score and threshold."""
    return pd.DataFrame(
        {
            "timestamp": series.timestamps[test_pos],
            "combo": series.combo,
            "value": series.values[test_pos],
            "is_anomaly": series.labels[test_pos],
            "event_id": series.event_ids[test_pos],
            "status": got["status"].to_numpy(),
            "score": got["score"].to_numpy(dtype=np.float64),
            "threshold": got["threshold"].to_numpy(dtype=np.float64),
            "flag": got["is_anomaly"].to_numpy(dtype=object),
            "expected": got["expected"].to_numpy(dtype=np.float64),
            "expected_low": got["expected_low"].to_numpy(dtype=np.float64),
            "expected_high": got["expected_high"].to_numpy(dtype=np.float64),
            "baseline_score": base,
            "baseline_threshold": base_threshold,
        }
    )


def plot_combo(
    rows: pd.DataFrame, combo: str, path: Path, missed: list[dict[str, Any]] | None = None
) -> None:
    """Series with expected band, flags and ground truth; score trace with threshold.

    ``missed``: the decision's missed events of this combo (``evaluate_series``'s
    ``missed_events``; ``start``/``end`` index the combo's test rows), shaded on both panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = rows[rows["combo"] == combo]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(14, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    _plot_values(top, part, combo)
    _plot_scores(bottom, part)
    _shade_missed(top, bottom, part, missed or [])
    bottom.set_ylabel("score (−log10 tail prob.)")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_values(ax: Any, part: pd.DataFrame, combo: str) -> None:
    """The top panel: expected band, counts, labelled steps and flagged steps."""
    ts = part["timestamp"]
    ax.fill_between(
        ts,
        part["expected_low"],
        part["expected_high"],
        color="#9ecae1",
        alpha=0.5,
        label="expected band (model)",
        step="mid",
    )
    ax.plot(ts, part["value"], color="#08306b", lw=0.9, label="count")
    truth = part["is_anomaly"].to_numpy(dtype=bool)
    ax.scatter(
        ts[truth],
        part["value"][truth],
        s=40,
        facecolors="none",
        edgecolors="#ff7f0e",
        lw=1.2,
        label="ground truth (labels, evaluation only)",
    )
    flags = part["flag"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    ax.scatter(ts[flags], part["value"][flags], s=14, color="#d62728", zorder=3, label="flagged")
    ax.set_ylabel("value per step")
    ax.legend(loc="upper left", ncol=4, fontsize=8)
    ax.set_title(f"{combo}: test split")


def _plot_scores(ax: Any, part: pd.DataFrame) -> None:
    """The bottom panel: the calibrated score and the threshold, on a symlog axis."""
    ax.plot(part["timestamp"], part["score"], color="#6a51a3", lw=0.8, label="calibrated score")
    ax.axhline(
        part["threshold"].dropna().iloc[0] if part["threshold"].notna().any() else np.nan,
        color="#d62728",
        ls="--",
        lw=1,
        label="threshold",
    )
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)  # scores are tail probabilities' -log10: never below 0


def _shade_missed(top: Any, bottom: Any, part: pd.DataFrame, missed: list[dict[str, Any]]) -> None:
    """Shade each missed event on both panels and name it on the top one."""
    ts = part["timestamp"]
    half = (ts.iloc[1] - ts.iloc[0]) / 2 if len(ts) > 1 else pd.Timedelta(0)
    for i, m in enumerate(missed):
        for ax in (top, bottom):
            ax.axvspan(
                ts.iloc[m["start"]] - half,
                ts.iloc[m["end"]] + half,
                color="#fdae6b",
                alpha=0.45,
                lw=0,
                label="missed event" if i == 0 and ax is bottom else None,
            )
        top.annotate(
            m["event_id"] or "missed",
            (ts.iloc[m["start"]], part["value"].iloc[m["start"] : m["end"] + 1].max()),
            xytext=(4, 8),
            textcoords="offset points",
            fontsize=8,
            color="#a63603",
        )


def build_parser(prog: str = "python -m app.evaluate") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Evaluate trained detectors and the seasonal robust-z baseline on the test "
        "split (thresholds from validation only). Writes metrics.json, metrics.md and plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    detailed = sub.add_parser(
        "detailed",
        help="metrics, table and plots",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    detailed.add_argument(
        "--model-dir",
        type=Path,
        default=PROJECT_ROOT / "models",
        help="model root (models) or a detector folder (models/fcvae)",
    )
    detailed.add_argument(
        "--output-dir",
        type=Path,
        default=Path("plots") / "eval",
        help="where metrics.json, metrics.md and PNGs go",
    )
    detailed.add_argument(
        "--detector",
        choices=[ENSEMBLE, PRIMARY],
        default=ENSEMBLE,
        help="decision used for the stream-path scores (ensemble falls back "
        "to fcvae when no VAE+GAN is trained)",
    )
    detailed.add_argument(
        "--streaming-sim",
        action="store_true",
        help="score hour by hour through the stream's state rule (always on; "
        "kept for compatibility)",
    )
    detailed.add_argument(
        "--max-gap-hours",
        type=int,
        default=DEFAULT_MAX_GAP_HOURS,
        help="longest gap bridged before a window resets (as MAX_GAP_HOURS)",
    )
    detailed.add_argument("--seed", type=int, default=42)
    detailed.add_argument("--no-plots", action="store_true")
    add_data_arguments(detailed)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m app.evaluate") -> int:
    from app.logs import setup_logging

    args = build_parser(prog).parse_args(argv)
    setup_logging()
    try:
        frame = load_from_args(args)
        root = model_root(args.model_dir)
        detector = PRIMARY if args.model_dir.name == PRIMARY else args.detector
        metrics, rows = evaluate(
            frame, root, detector=detector, seed=args.seed, max_gap=args.max_gap_hours
        )
    except AnomalyError as exc:
        log.error("%s", exc)
        return 1
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(
        json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False)
    )
    table = markdown_table({k: v for k, v in metrics.items() if not k.startswith("_")})
    (out / "metrics.md").write_text(table + "\n")
    rows.to_csv(out / "test_scores.csv", index=False)
    if not args.no_plots:
        decision = metrics[metrics["_meta"]["decision_detector"]]["per_combo"]
        for combo in metrics["_meta"]["combos"]:
            missed = decision[combo]["missed_events"]
            plot_combo(rows, combo, out / f"{combo}.png", missed=missed)
    print(table)  # the CLI's answer
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
