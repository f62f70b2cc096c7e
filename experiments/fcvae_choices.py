"""Which FCVAE settings to ship: validation and test event metrics with the window cleaning
on and off, for one or more trained model roots.

    python experiments/fcvae_choices.py --model-dir models --model-dir /tmp/models-nolog

For every combo and setting the threshold is chosen again on the validation split (as
``app.train`` does), so each row is what that setting would ship.  Choose on the
``val`` columns; the ``test`` columns are there to report, never to choose.  The table
in TECHNICAL.md ("FCVAE choices") came from this script.
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

from app.cli_common import add_data_arguments, load_from_args
from app.detectors.fcvae import FCVAEDetector
from app.evaluation import aggregate, evaluate_series
from app.pipeline import ComboSeries, calibrate_scores, detector_score_fn
from app.postprocess.calibrate import EmpiricalCalibrator


def evaluate_setting(detector: Any, series: ComboSeries) -> tuple[dict[str, Any], dict[str, Any]]:
    """(validation metrics, test metrics) of ``detector`` with a threshold chosen on val."""
    score_fn = detector_score_fn(detector, series)
    decision, val = calibrate_scores(score_fn, series)
    calibrator = EmpiricalCalibrator.from_dict(decision["calibrator"])
    test_pos = series.positions("test")
    scores = calibrator.transform(score_fn(series.values, test_pos)[test_pos])
    test = evaluate_series(
        scores,
        decision["threshold_calibrated"],
        series.labels[test_pos],
        event_ids=series.event_ids[test_pos],
        valid=np.isfinite(scores),
        step_hours=series.step_seconds / 3600,
    )
    return val, test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python experiments/fcvae_choices.py",
        description="Validation and test event metrics of trained FCVAE models, with the "
        "window cleaning on (as trained) and off.",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        action="append",
        required=True,
        help="a model root holding fcvae/<combo>/ (repeatable)",
    )
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    frame = load_from_args(args)
    columns = ["models", "log", "reference", "cleaning", "val P", "val R", "val F1"]
    columns += ["test P", "test R", "test F1", "test AUPRC"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for root in args.model_dir:
        combos = sorted(p.name for p in (root / "fcvae").iterdir() if (p / "meta.json").exists())
        detectors = {c: FCVAEDetector.load(root / "fcvae" / c) for c in combos}
        first = detectors[combos[0]].params
        for cleaning in (first.clean_k, None):
            val: dict[str, Any] = {}
            test: dict[str, Any] = {}
            for combo, detector in detectors.items():
                detector.params = detector.params.model_copy(update={"clean_k": cleaning})
                series = ComboSeries.from_frame(frame, combo)
                val[combo], test[combo] = evaluate_setting(detector, series)
            v, t = aggregate(val)["event"], aggregate(test)
            te = t["event"]
            print(
                f"| {root} | {'on' if first.log_transform else 'off'} | "
                f"{f'{first.reference_weeks} weeks' if first.reference_weeks else 'off'} | "
                f"{'off' if cleaning is None else f'k={cleaning:g}'} | "
                f"{v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | "
                f"{te['precision']:.3f} | {te['recall']:.3f} | {te['f1']:.3f} | "
                f"{t['auprc']:.3f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
