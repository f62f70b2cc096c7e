"""Which of several equally good validation thresholds to ship, judged on validation alone.

    python experiments/threshold_ties.py --model-dir models

On the demo data a wide range of thresholds often reaches the same validation event F1
(1.0 for some combos), so the rule that picks one of them decides how subtle an event
can be caught.  This script compares the rules of
:func:`app.postprocess.threshold.pick_among_ties` (``highest``, ``middle``, ``lowest``)
by **two-fold cross-validation over time inside the validation split**:

* the validation split is cut into its first and second half;
* on one half the calibrator is fitted (clean hours) and the threshold is chosen, exactly as
  ``app.train`` does on the whole split: that half as it is plus ``--select-copies``
  copies with injected spikes and dips, each with its own injections;
* on the *other* half the threshold is judged: its real labelled events and false alarms,
  plus ``--heldout-copies`` copies with fresh injections (other seeds, so other hours and
  sizes), whose real-labelled hours are left out so each real event counts once.

Both directions are pooled over the four combos. Choose on these columns. The ``test``
columns show what each rule would ship when chosen on the whole validation split; they are
printed to report, never to choose.  The table in TECHNICAL.md ("Choosing thresholds")
came from this script.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from numpy.typing import NDArray

from app.cli_common import add_data_arguments, load_from_args
from app.detectors.fcvae import FCVAEDetector, FCVAEParams
from app.evaluation import aggregate, evaluate_series
from app.pipeline import (
    DEFAULT_INJECT_COPIES,
    ComboSeries,
    Copy,
    calibrate_scores,
    derive_seed,
    detector_score_fn,
    injected_copy,
    stack_copies,
)
from app.postprocess.calibrate import EmpiricalCalibrator
from app.postprocess.threshold import choose_threshold
from app.train import parse_overrides

RULES = (
    "event_f1:highest",
    "event_f1:middle",
    "event_f1:lowest",
    "event_recall@0.9:highest",
    "event_recall@0.8:highest",
    "event_recall@0.8:middle",
)


def rule_kwargs(rule: str) -> dict[str, Any]:
    """``"event_recall@0.8:middle"`` -> choose_threshold's keyword arguments.

    Examples
    --------
    >>> rule_kwargs("event_recall@0.8:middle")
    {'objective': 'event_recall', 'min_precision': 0.8, 'ties': 'middle'}
    """
    objective, _, ties = rule.partition(":")
    objective, _, precision = objective.partition("@")
    return {
        "objective": objective,
        "min_precision": float(precision) if precision else None,
        "ties": ties or "highest",
    }


def tagged_copy(score_fn: Any, series: ComboSeries, pos: Any, seed: int, tag: str, n: int) -> Copy:
    """Validation hours with ``n`` injected spikes/dips (seeded by ``tag``), scored."""
    raw, labels, ids = injected_copy(score_fn, series, pos, derive_seed(seed, series.combo, tag), n)
    return raw, labels, np.where(ids >= 0, f"{tag}:" + ids.astype(str), "")


def stack(copies: list[Copy], keep: NDArray[np.bool_]) -> Copy:
    """The ``keep`` hours of each copy, laid end to end as validation_set lays them."""
    return stack_copies(
        [
            (np.where(keep, raw, np.nan), labels & keep, np.where(keep, ids, ""))
            for raw, labels, ids in copies
        ]
    )


def cross_validate(
    detector: Any,
    series: ComboSeries,
    *,
    seed: int,
    n_inject: int,
    select: int,
    heldout: int,
    rules: list[str],
) -> dict[str, list[dict[str, Any]]]:
    """Per rule: the held-out metrics of both folds (first → second half and back)."""
    score_fn = detector_score_fn(detector, series)
    pos = series.positions("val")
    raw = score_fn(series.values, pos)[pos]
    labels = series.labels[pos]
    real: Copy = (raw, labels, np.where(labels, "real:" + series.event_ids[pos], ""))
    # Injected events are placed over the whole split and kept by the half they fall in.
    sel = [tagged_copy(score_fn, series, pos, seed, f"sel{k}", n_inject) for k in range(select)]
    out = [tagged_copy(score_fn, series, pos, seed, f"out{k}", n_inject) for k in range(heldout)]
    half = np.arange(len(pos)) < len(pos) // 2
    step_hours = series.step_seconds / 3600
    results: dict[str, list[dict[str, Any]]] = {rule: [] for rule in rules}
    for fit_half in (half, ~half):
        test_half = ~fit_half
        clean = fit_half & ~labels & np.isfinite(raw)
        calibrator = EmpiricalCalibrator().fit(raw[clean])
        # Selection: the fitting half as it is, plus injected copies (labels = real | injected;
        # each copy's real events get ids of their own, or one "event" would span the copies).
        sel_copies = [real] + [
            (r, labels | lab, np.where(lab, i, np.where(labels, f"sel{k}:", "") + real[2]))
            for k, (r, lab, i) in enumerate(sel)
        ]
        s_raw, s_lab, s_ids = stack(sel_copies, fit_half)
        s_cal = calibrator.transform(s_raw)
        # Held out: the other half once as it is, then fresh injections with the real
        # labelled hours left out (each real event counts once).
        h_copies = [real] + [(np.where(labels, np.nan, r), lab, i) for r, lab, i in out]
        h_raw, h_lab, h_ids = stack(h_copies, test_half)
        h_cal = calibrator.transform(h_raw)
        for rule in rules:
            choice = choose_threshold(
                s_cal, s_lab, s_ids, np.isfinite(s_cal), step_hours=step_hours, **rule_kwargs(rule)
            )
            results[rule].append(
                evaluate_series(
                    h_cal,
                    choice.threshold,
                    h_lab,
                    event_ids=h_ids,
                    valid=np.isfinite(h_cal),
                    step_hours=step_hours,
                )
            )
    return results


def shipped_test(
    detector: Any, series: ComboSeries, rule: str, copies: int
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """(threshold, validation metrics, test metrics) of the rule applied to the whole
    validation split, as ``app.train`` applies it."""
    score_fn = detector_score_fn(detector, series)
    decision, val = calibrate_scores(score_fn, series, copies=copies, **rule_kwargs(rule))
    calibrator = EmpiricalCalibrator.from_dict(decision["calibrator"])
    test_pos = series.positions("test")
    scores = calibrator.transform(score_fn(series.values, test_pos)[test_pos])
    threshold = decision["threshold_calibrated"]
    return (
        threshold,
        val,
        evaluate_series(
            scores,
            threshold,
            series.labels[test_pos],
            event_ids=series.event_ids[test_pos],
            valid=np.isfinite(scores),
            step_hours=series.step_seconds / 3600,
        ),
    )


def threshold_spread(
    detector: Any, series: ComboSeries, rule: str, copies: int, seeds: range
) -> NDArray[np.float64]:
    """The thresholds the rule picks on the whole validation split when the injections are
    drawn again with each of ``seeds`` (how much of a lottery the choice is)."""
    score_fn = detector_score_fn(detector, series)
    return np.array(
        [
            calibrate_scores(score_fn, series, seed=seed, copies=copies, **rule_kwargs(rule))[0][
                "threshold_calibrated"
            ]
            for seed in seeds
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python experiments/threshold_ties.py",
        description="Cross-validate the tie rules for validation thresholds inside the "
        "validation split (two halves in time, fresh injections held out).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="model root")
    parser.add_argument("--n-inject", type=int, default=12, help="injections per copy")
    parser.add_argument(
        "--select-copies",
        type=int,
        default=DEFAULT_INJECT_COPIES,
        help="injected copies to choose on",
    )
    parser.add_argument("--heldout-copies", type=int, default=8, help="injected copies to judge")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-test", action="store_true", help="skip the test columns")
    parser.add_argument(
        "--spread",
        type=int,
        default=0,
        metavar="N",
        help="also print, per combo, the spread of the thresholds each rule picks when the "
        "validation injections are drawn with N other seeds",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="score with this FCVAE parameter changed (repeatable; as app.train --set)",
    )
    parser.add_argument(
        "--rule",
        action="append",
        help="OBJECTIVE[@MIN_PRECISION]:TIES to compare (repeatable; default: "
        + ", ".join(RULES)
        + ")",
    )
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    frame = load_from_args(args)
    combos = sorted(p.name for p in (args.model_dir / "fcvae").iterdir() if p.is_dir())
    rules = args.rule or list(RULES)
    cv: dict[str, dict[str, Any]] = {r: {} for r in rules}
    test: dict[str, dict[str, Any]] = {r: {} for r in rules}
    val: dict[str, dict[str, Any]] = {r: {} for r in rules}
    overrides = parse_overrides(args.overrides, FCVAEParams)
    thresholds: dict[str, dict[str, float]] = {r: {} for r in rules}
    detectors = {c: FCVAEDetector.load(args.model_dir / "fcvae" / c) for c in combos}
    for detector in detectors.values():
        detector.params = detector.params.model_copy(update=overrides)
    for combo, detector in detectors.items():
        series = ComboSeries.from_frame(frame, combo)
        folds = cross_validate(
            detector,
            series,
            seed=args.seed,
            n_inject=args.n_inject,
            select=args.select_copies,
            heldout=args.heldout_copies,
            rules=rules,
        )
        for rule, results in folds.items():
            for k, result in enumerate(results):
                cv[rule][f"{combo}/{k}"] = result
            if not args.no_test:
                thresholds[rule][combo], val[rule][combo], test[rule][combo] = shipped_test(
                    detector, series, rule, args.select_copies
                )
    columns = ["rule", "CV P", "CV R", "CV F1", "CV false alarms/day"]
    if not args.no_test:
        columns += ["val F1", "thresholds (by combo)", "test P", "test R", "test F1"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for rule in rules:
        o = aggregate(cv[rule])
        e = o["event"]
        days = o["scored_hours"] / 24
        row = [
            rule,
            f"{e['precision']:.3f}",
            f"{e['recall']:.3f} ({e['detected']}/{e['n_events']})",
            f"{e['f1']:.3f}",
            f"{e['false_alarms'] / days:.3f}",
        ]
        if not args.no_test:
            t = aggregate(test[rule])["event"]
            row += [
                f"{aggregate(val[rule])['event']['f1']:.3f}",
                " ".join(f"{thresholds[rule][c]:.1f}" for c in combos),
                f"{t['precision']:.3f}",
                f"{t['recall']:.3f} ({t['detected']}/{t['n_events']})",
                f"{t['f1']:.3f}",
            ]
        print("| " + " | ".join(row) + " |")
    if args.spread:
        seeds = range(1000, 1000 + args.spread)
        print(f"\nthresholds over {args.spread} injection seeds (median, min-max) by combo:")
        for rule in rules:
            cells = []
            for combo, detector in detectors.items():
                t = threshold_spread(
                    detector, ComboSeries.from_frame(frame, combo), rule, args.select_copies, seeds
                )
                cells.append(f"{combo} {np.median(t):.1f} ({t.min():.1f}-{t.max():.1f})")
            print(f"- {rule}, {args.select_copies} copies: " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
