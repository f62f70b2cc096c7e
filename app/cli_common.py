"""Argument groups shared by the CLIs: any CSV of counts, its columns and its splits."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from app import PROJECT_ROOT
from app.data import RESAMPLE_METHODS, VALUE_CHOICES, ColumnSpec, load_counts

log = logging.getLogger(__name__)

DEFAULT_DATA = PROJECT_ROOT / "data" / "synthetic_transactions.csv"


def _optional(name: str | None) -> str | None:
    return None if name in (None, "", "none", "None") else name


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``data`` group: any CSV of counts, its columns, time step, values and splits."""
    group = parser.add_argument_group(
        "data",
        "Any CSV of counts works: name its columns. Without a split column, each series' "
        "first --train-frac of time is training, the next --val-frac validation, the rest test.",
    )
    _add_column_arguments(group)
    _add_grid_arguments(group)
    _add_split_arguments(group)


def _add_column_arguments(group: argparse._ArgumentGroup) -> None:
    """The file and which of its columns hold what."""
    group.add_argument(
        "--data-path", type=Path, default=DEFAULT_DATA, help="CSV of counts (default: %(default)s)"
    )
    group.add_argument("--time-col", default="timestamp", help="time column (default: %(default)s)")
    group.add_argument(
        "--key-col",
        default="combo",
        help="series-key column, e.g. combo (default: %(default)s; 'none' = one "
        "series named after the file)",
    )
    group.add_argument("--value-col", default="count", help="count column (default: %(default)s)")
    group.add_argument(
        "--label-col",
        default="is_anomaly",
        help="optional 0/1 label column, used for validation and evaluation only "
        "(default: %(default)s, skipped when absent; 'none' to ignore)",
    )
    group.add_argument(
        "--split-col",
        default="split",
        help="optional train/val/test column (default: %(default)s, skipped when absent)",
    )
    group.add_argument(
        "--event-col", default="event_id", help="optional event-id column (default: %(default)s)"
    )


def _add_grid_arguments(group: argparse._ArgumentGroup) -> None:
    """The series' time step, resampling onto it, and what the values are."""
    group.add_argument(
        "--freq",
        default="auto",
        help="time step of the series, e.g. 1h, 30min, 5min, 1min; auto = the most common "
        "step between consecutive timestamps, printed when loading (default: %(default)s)",
    )
    group.add_argument(
        "--resample",
        choices=RESAMPLE_METHODS,
        default=None,
        help="aggregate irregular or repeated timestamps onto the --freq grid: sum (counts), "
        "mean or last (default: off; off-grid or repeated timestamps are an error)",
    )
    group.add_argument(
        "--values",
        choices=VALUE_CHOICES,
        default=None,
        help="counts: non-negative counts (log-scaled models, multiplicative injected "
        "spikes/dips); real: any numbers, e.g. already normalised KPIs or rates (no log "
        "transform, injections in units of the series' spread); auto: counts when every "
        "value is a non-negative whole number, else real (logged). Default: auto for "
        "training; scoring uses what the models were trained on",
    )


def _add_split_arguments(group: argparse._ArgumentGroup) -> None:
    """The split of a file without a split column, and which series to use."""
    group.add_argument(
        "--train-frac",
        type=float,
        default=0.70,
        help="share of each series' time span used for training when the file "
        "has no split column (default: %(default)s)",
    )
    group.add_argument(
        "--val-frac",
        type=float,
        default=0.15,
        help="share used for validation after that (default: %(default)s)",
    )
    group.add_argument(
        "--combos",
        nargs="+",
        default=None,
        metavar="COMBO",
        help="only these series (default: all in the file)",
    )


def load_from_args(args: Any) -> pd.DataFrame:
    """Load the CSV the arguments (a parsed namespace or a ``TrainConfig``) name,
    restricted to ``--combos``."""
    default = ColumnSpec()
    columns = ColumnSpec(
        time=args.time_col,
        key=_optional(args.key_col),
        value=args.value_col,
        label=_optional(args.label_col),
        split=_optional(args.split_col),
        event=_optional(args.event_col),
        anomaly_type=default.anomaly_type,
    )
    frame = load_counts(
        args.data_path,
        columns,
        freq=args.freq,
        train_frac=args.train_frac,
        val_frac=args.val_frac,
        resample=getattr(args, "resample", None),
        values=getattr(args, "values", None) or "auto",
    )
    if args.combos:
        known = set(frame["combo"].unique())
        unknown = [c for c in args.combos if c not in known]
        if unknown:
            raise SystemExit(
                f"error: --combos {unknown} not in {args.data_path} (combos there: {sorted(known)})"
            )
        frame = frame[frame["combo"].isin(args.combos)]
    return frame


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="torch device; auto = cuda when available (default: %(default)s)",
    )
    group.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: all cores)"
    )
    group.add_argument("--seed", type=int, default=42, help="global seed (default: %(default)s)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def resolve_device(args: Any) -> str:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    return str(args.device)


def progress_enabled(args: Any) -> bool:
    return not args.no_progress and os.environ.get("CI") != "true"
