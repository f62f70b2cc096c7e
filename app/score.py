"""Score every hour of a CSV causally, exactly as the stream would.

    python -m app.score --model-dir models --data-path X.csv --output scores.csv

Each combo's hours go through the stream's state rule (``advance``) in time order and
the ready windows through the stream's scorer, so every hour sees only data up to
itself and the scores equal the stream's.  Labels in the file, if any, are not used.
Output columns: ``timestamp, combo, value, score, threshold, is_anomaly`` then status,
direction, expected band, per-detector scores, detector and model version.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app import PROJECT_ROOT
from app.artifacts import model_root
from app.catalog import DETECTORS, ENSEMBLE, decision_names
from app.cli_common import add_data_arguments, load_from_args
from app.config import DEFAULT_MAX_GAP_HOURS
from app.errors import AnomalyError
from app.registry import ModelRegistry
from app.scoring import score_frame
from app.timebase import TimeBase, freq_string

log = logging.getLogger(__name__)

LEADING = ["timestamp", "combo", "value", "score", "threshold", "is_anomaly"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.score",
        description="Score every hour of a CSV of counts causally with the trained models "
        "(the stream's own code path) and write one row per hour.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=PROJECT_ROOT / "models",
        help="model root (models) or a detector folder (models/fcvae)",
    )
    parser.add_argument("--output", type=Path, default=Path("scores.csv"), help="CSV to write")
    parser.add_argument(
        "--detector",
        choices=decision_names(),
        default=ENSEMBLE,
        help="decision to use (ensemble falls back to fcvae when no VAE+GAN "
        "is trained; a detector folder as --model-dir picks that detector)",
    )
    parser.add_argument(
        "--split",
        default="all",
        help="only hours of this split (train/val/test/all); the window "
        "before it is still used as context",
    )
    parser.add_argument(
        "--max-gap-hours",
        type=int,
        default=DEFAULT_MAX_GAP_HOURS,
        help="longest gap, in hours, bridged before a window resets (as MAX_GAP_HOURS; "
        "converted to steps of the data's time step)",
    )
    parser.add_argument(
        "--n-samples", type=int, default=None, help="latent draws per window (default: the model's)"
    )
    add_data_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        detector = args.model_dir.name if args.model_dir.name in DETECTORS else args.detector
        registry = ModelRegistry(
            model_root(args.model_dir), detector=detector, n_samples=args.n_samples
        )
        known = registry.check()
        if args.values is None:  # read the file the way the models were trained
            args.values = registry.value_kind()
        frame = load_from_args(args)
        unknown = sorted(set(frame["combo"].unique()) - set(known))
        if unknown:
            raise AnomalyError(
                f"no model for combos {unknown} under {args.model_dir} "
                f"(trained: {known}); train them or pass --combos"
            )
        timebase = TimeBase(int(frame.attrs.get("step_seconds", 3600)))
        trained = registry.step_seconds()
        if trained != timebase.step_seconds:
            raise AnomalyError(
                f"the models under {args.model_dir} were trained at {trained}-s steps but "
                f"{args.data_path} is on {timebase.step_seconds}-s steps; pass --freq "
                f"{freq_string(trained)} (with --resample sum if the file is finer) or "
                "retrain on this data"
            )
        window = registry.window()  # the stream keeps the longest window of any combo
        scored = score_frame(
            frame,
            registry,
            window=window,
            max_gap_steps=timebase.hours_to_steps(args.max_gap_hours),
            step_seconds=timebase.step_seconds,
        )
    except AnomalyError as exc:
        log.error("%s", exc)
        return 1
    scored = scored.rename(columns={"count": "value"})
    if args.split != "all":
        keep = frame[frame["split"] == args.split][["combo", "timestamp"]]
        scored = scored.merge(keep, on=["combo", "timestamp"], how="inner")
    scored["timestamp"] = scored["hour"]
    rest = [
        c
        for c in scored.columns
        if c not in LEADING and c not in ("hour", "scored_at", "produced_at")
    ]
    scored[LEADING + rest].to_csv(args.output, index=False)
    n_flag = int(scored["is_anomaly"].eq(True).sum())
    log.info(
        "wrote %d steps of %d s (%d scored, %d flagged, %d warming up) to %s",
        len(scored),
        timebase.step_seconds,
        int((scored["status"] == "scored").sum()),
        n_flag,
        int((scored["status"] == "warming_up").sum()),
        args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
