"""Train per-combo detectors, calibrate them on validation, and save their artifacts.

    python -m app.train --detector fcvae --data-path data/synthetic_transactions.csv \\
        --output-dir models [--combos Accel_CMP ...] [--epochs 75] [--kl-warmup-epochs 35]

writes ``<output-dir>/<detector>/<combo>/{meta.json,weights.pt}`` and a training-curve
plot beside them.  ``python -m app.train_fcvae`` is the same with ``--detector fcvae``
and ``--output-dir`` naming the detector folder itself (``models/fcvae``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app import PROJECT_ROOT, artifacts
from app.catalog import ENSEMBLE, detector_names, spec
from app.cli_common import (
    add_data_arguments,
    add_runtime_arguments,
    load_from_args,
    progress_enabled,
    resolve_device,
)
from app.data import check_min_length
from app.errors import AnomalyError, DataError
from app.pipeline import (
    DEFAULT_ALARM_BUDGET,
    DEFAULT_EVENTS_PER_WEEK,
    DEFAULT_INJECT_COPIES,
    DEFAULT_MAX_FLAGS_PER_DAY,
    DEFAULT_N_INJECT,
    DEFAULT_TIES,
    MAX_DEFAULT_WINDOW_STEPS,
    Choice,
    ComboSeries,
    ThresholdRule,
    calibrate_scores,
    detector_class,
    detector_score_fn,
    fit_to_history,
    min_train_points,
    params_class,
    reference_hint,
    train_detector,
)
from app.postprocess.threshold import TIES
from app.timebase import TimeBase
from app.train_config import TrainConfig

if TYPE_CHECKING:  # torch, only for the type
    from app.detectors.training import FitReport

log = logging.getLogger(__name__)


def build_parser(
    prog: str = "python -m app.train", fixed_detector: str | None = None
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train one detector per combo on the train split, early-stop on the "
        "validation split, calibrate scores and choose the threshold on the validation split "
        "(its labelled events plus injected spikes and dips; never the test split), and save "
        "meta.json + weights.pt per combo.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_output_arguments(parser, fixed_detector)
    add_data_arguments(parser)
    model = parser.add_argument_group("model")
    _add_network_arguments(model)
    _add_input_arguments(model)
    _add_override_arguments(model)
    _add_calibration_arguments(model)
    add_runtime_arguments(parser)
    return parser


def _add_output_arguments(parser: argparse.ArgumentParser, fixed_detector: str | None) -> None:
    """``--detector`` and ``--output-dir``; with ``fixed_detector`` only ``--output-dir``, naming
    that detector's own folder."""
    if fixed_detector is None:
        parser.add_argument(
            "--detector",
            choices=[*detector_names(), "all", ENSEMBLE],
            default="all",
            help="which detector(s) to train; all = both, then the ensemble; ensemble = only "
            "refit <output-dir>/ensemble.json from trained artifacts",
        )
        parser.add_argument(
            "--output-dir",
            type=Path,
            default=PROJECT_ROOT / "models",
            help="model root; artifacts go to <output-dir>/<detector>/<combo>/",
        )
    else:
        parser.set_defaults(detector=fixed_detector)
        parser.add_argument(
            "--output-dir",
            type=Path,
            default=PROJECT_ROOT / "models" / fixed_detector,
            help="artifacts go to <output-dir>/<combo>/",
        )


def _add_network_arguments(model: argparse._ArgumentGroup) -> None:
    """The networks' schedule and windows (group ``model``): epochs, KL warm-up, window."""
    model.add_argument("--epochs", type=int, default=None, help="max epochs (default: model's)")
    model.add_argument(
        "--kl-warmup-epochs",
        type=int,
        default=None,
        help="epochs of linear KL annealing (FCVAE; default: model's)",
    )
    model.add_argument(
        "--window",
        type=int,
        default=None,
        help="FCVAE network window W in steps (default: one week of steps, at most 168, "
        "smaller where the history is short)",
    )
    model.add_argument(
        "--vaegan-window",
        type=int,
        default=None,
        help="VAE+GAN window in steps (default: model's, 24, smaller where the history is short)",
    )


def _add_input_arguments(model: argparse._ArgumentGroup) -> None:
    """What the FCVAE sees of the series (group ``model``): window cleaning, weekly or daily
    reference, log transform."""
    model.add_argument(
        "--clean-k",
        type=float,
        default=None,
        help="FCVAE window cleaning: past points further than this many robust sigmas from "
        "their time-of-day median are replaced before scoring; 0 turns it off (default: "
        "model's, 3)",
    )
    model.add_argument(
        "--reference-weeks",
        type=int,
        default=None,
        help="FCVAE: model each step relative to the median of the same time of the week "
        "over this many previous weeks (windows grow by as many weeks); 0 turns it off "
        "(default: 4 where the training data holds them and the window stays under "
        f"{MAX_DEFAULT_WINDOW_STEPS} steps, else 3, else 0; meta.json says which and why)",
    )
    model.add_argument(
        "--daily-reference",
        action="store_true",
        help="FCVAE: where no weekly reference fits the history, model each step against "
        "the same time of day over the previous 7 (else 5, else 3) days (default: off)",
    )
    model.add_argument(
        "--log-transform",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="model log1p(counts), so that a -50%% dip weighs the same at night as at "
        "the daily peak (default: on for --values counts, off for --values real)",
    )


def _add_override_arguments(model: argparse._ArgumentGroup) -> None:
    """Any model parameter by name (``--set``), and ``--tiny`` networks (group ``model``)."""
    model.add_argument(
        "--set",
        dest="overrides",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="set any model parameter (repeatable), e.g. --set hidden_dim=200 --set "
        "latent_dim=16; values are parsed as JSON where they can be (numbers, true/false, "
        "null), else taken as text; a name the model does not have is an error listing "
        "the ones it has",
    )
    model.add_argument(
        "--tiny",
        action="store_true",
        help="tiny networks and few epochs (smoke tests, seconds per combo)",
    )


def _add_calibration_arguments(model: argparse._ArgumentGroup) -> None:
    """How thresholds are chosen on validation (group ``model``): injected events, false
    alarm weight, ties and the alarm budget."""
    model.add_argument(
        "--n-inject",
        type=int,
        default=DEFAULT_N_INJECT,
        help="spikes/dips injected into each copy of the validation split for calibration",
    )
    model.add_argument(
        "--inject-copies",
        type=int,
        default=DEFAULT_INJECT_COPIES,
        help="copies of the validation split, each with its own injected spikes/dips, that "
        "thresholds are chosen on (with the split as it is)",
    )
    model.add_argument(
        "--events-per-week",
        type=float,
        default=DEFAULT_EVENTS_PER_WEEK,
        help="anomalies a week the threshold objective assumes the stream meets (12 per 4 "
        "weeks); where the injected events are denser (a validation split of days, as 1- "
        "and 5-minute series have), each validation false alarm weighs as many times more, "
        "so the threshold is not pulled down by events the stream will not meet that often; "
        "0 = count false alarms one for one",
    )
    model.add_argument(
        "--threshold-ties",
        choices=TIES,
        default=DEFAULT_TIES,
        help="which threshold to take when several give the same validation score: highest "
        "(fewest alarms), middle (of the widest tied range: more recall, more false alarms) "
        "or lowest",
    )
    model.add_argument(
        "--alarm-budget",
        type=float,
        default=DEFAULT_ALARM_BUDGET,
        help="largest share of clean validation steps any threshold may flag (the ensemble's "
        "too); where no threshold within it catches an injected event, the threshold is the "
        "budget's own; 0 = never flag a clean validation step",
    )
    model.add_argument(
        "--alarm-budget-per-day",
        type=float,
        default=DEFAULT_MAX_FLAGS_PER_DAY,
        help="and at most this many flagged clean validation steps per day (caps the "
        "budget of fine-grained series: 0.5%% of 1-minute steps is 7 a day); "
        "default: no daily cap",
    )


def _explicit(name: str, config: TrainConfig, base: Any) -> dict[str, Any]:
    """The parameters the user set on the command line (kept as they are)."""
    fields = type(base).model_fields
    update: dict[str, Any] = {}
    if config.clean_k is not None and "clean_k" in fields:
        update["clean_k"] = config.clean_k or None
    if config.reference_weeks is not None and "reference_weeks" in fields:
        update["reference_weeks"] = config.reference_weeks
    if config.log_transform is not None and "log_transform" in fields:
        update["log_transform"] = config.log_transform
    if config.epochs is not None and "epochs" in fields:
        update["epochs"] = config.epochs
    option = spec(name).window_option
    window = getattr(config, option) if option else None
    if window is not None:
        update["window"] = window
    if config.kl_warmup_epochs is not None and "kl_warmup_epochs" in fields:
        update["kl_warmup_epochs"] = config.kl_warmup_epochs
    update.update(parse_overrides(config.overrides, type(base)))
    return update


def _params(
    name: str,
    config: TrainConfig,
    step_seconds: int = 3600,
    n_train: int | None = None,
    value_kind: str = "counts",
) -> tuple[Any, list[Choice]]:
    """The params of detector ``name`` for one series: the defaults (or ``--tiny``) fitted
    to its step and history (``fit_to_history``), then what the user set."""
    base = detector_class(name).tiny_params() if config.tiny else params_class(name)()
    explicit = _explicit(name, config, base)
    fitted, choices = fit_to_history(
        base,
        timebase=TimeBase(step_seconds),
        n_train=n_train,
        value_kind=value_kind,
        explicit=frozenset(explicit),
        preset=bool(config.tiny),
        daily_reference=bool(config.daily_reference),
    )
    # Validate the result (model_copy does not): a bad value fails here, naming the field.
    try:
        params = type(base).model_validate({**base.model_dump(), **fitted, **explicit})
    except ValueError as exc:  # pydantic's ValidationError
        raise DataError(f"invalid model parameters for {name}: {exc}") from exc
    return params, choices


def parse_overrides(items: list[str], params_type: Any) -> dict[str, Any]:
    """``["hidden_dim=200", "mcmc_sample=false"]`` -> ``{"hidden_dim": 200, ...}``.

    Values are JSON where they parse as JSON, else text; names must be fields of
    ``params_type`` (a pydantic model).

    Examples
    --------
    >>> from app.detectors.fcvae import FCVAEParams
    >>> parse_overrides(["hidden_dim=200", "clean_k=null"], FCVAEParams)
    {'hidden_dim': 200, 'clean_k': None}
    """
    out: dict[str, Any] = {}
    fields = sorted(params_type.model_fields)
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise DataError(f"--set expects NAME=VALUE, got {item!r}")
        if name not in fields:
            raise DataError(
                f"--set {name}: {params_type.__name__} has no such parameter; it has "
                + ", ".join(fields)
            )
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out


def save_training_curves(history: dict[str, list[float]], path: Path, title: str) -> None:
    """One panel per loss term (train and val), for people who would rather look."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = sorted({k.split("_", 1)[1] for k in history if k.startswith(("train_", "val_"))})
    if not terms:
        return
    fig, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3), squeeze=False)
    for ax, term in zip(axes[0], terms, strict=True):
        for split in ("train", "val"):
            values = history.get(f"{split}_{term}")
            if values:
                ax.plot(range(1, len(values) + 1), values, label=split)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def choose_component_weight(detector: Any, series: ComboSeries) -> None:
    """VAE+GAN: pick the critic's weight on the labelled validation windows."""
    from app.pipeline import windows_at

    pos, windows, seeds = windows_at(
        series, series.values, series.positions("val"), detector.window
    )
    labels = series.labels[pos]
    if labels.any() and not labels.all():
        chosen = detector.choose_critic_weight(windows, seeds, labels)
        log.info(
            "combo=%s critic weight %s chosen on validation (AUPRC by weight: %s)",
            series.combo,
            chosen["critic_weight"],
            chosen["auprc"],
        )


def threshold_rule(config: TrainConfig) -> ThresholdRule:
    """How thresholds are chosen on validation, from the CLI's arguments."""
    return ThresholdRule(
        seed=config.seed,
        n_inject=config.n_inject,
        copies=config.inject_copies,
        ties=config.threshold_ties,
        max_flag_share=config.alarm_budget,
        max_flags_per_day=config.alarm_budget_per_day,
        events_per_week=config.events_per_week or None,
    )


def series_params(name: str, series: ComboSeries, config: TrainConfig) -> Any:
    """``_params`` for one series: its step, its observed training steps, its values."""
    n_train = int(np.isfinite(series.values[series.positions("train")]).sum())
    return _params(name, config, series.step_seconds, n_train, series.value_kind)


def train_one(
    name: str,
    series: ComboSeries,
    config: TrainConfig,
    device: str,
    out_dir: Path,
    fitted: tuple[Any, list[Choice]] | None = None,
) -> dict[str, Any]:
    """Train, calibrate and save detector ``name`` for ``series``; ``fitted`` is its
    ``series_params`` when the caller has them already."""
    params, choices = fitted if fitted is not None else series_params(name, series, config)
    log_choices(series.combo, name, choices)
    started = time.perf_counter()
    detector, report = train_detector(
        name,
        series,
        params=params,
        seed=config.seed,
        device=device,
        progress=progress_enabled(config),
    )
    fit_s = time.perf_counter() - started

    if hasattr(detector, "choose_critic_weight"):
        choose_component_weight(detector, series)

    chosen, val_metrics = calibrate_scores(
        detector_score_fn(detector, series), series, threshold_rule(config)
    )
    decision = chosen.to_dict()
    warn_if_budget_fallback(series.combo, name, decision)
    extra = {
        "combo": series.combo,
        "decision": decision,
        "training": training_record(series, config, device, fit_s, choices, report),
        "validation_metrics": val_metrics,
    }
    directory = out_dir / series.combo
    detector.save(directory, extra_meta=extra)
    save_training_curves(
        report.history, directory / "training_curves.png", f"{name} {series.combo}"
    )
    summary = train_summary(name, series.combo, fit_s, report, decision, val_metrics["event"])
    log_trained(summary, decision, directory)
    return summary


def log_choices(combo: str, name: str, choices: list[Choice]) -> None:
    """Log each parameter ``fit_to_history`` chose for detector ``name`` and why."""
    for choice in choices:
        log.info(
            "combo=%s detector=%s chose %s=%s: %s",
            combo,
            name,
            choice.name,
            choice.value,
            choice.why,
        )


def training_record(
    series: ComboSeries,
    config: TrainConfig,
    device: str,
    fit_s: float,
    choices: list[Choice],
    report: FitReport,
) -> dict[str, Any]:
    """How the detector was trained (meta.json's ``training``): data, seed, device, time,
    spans, step, values, the parameters chosen for the history and the fit report."""
    return {
        "data_path": str(config.data_path),
        "seed": config.seed,
        "device": device,
        "fit_seconds": round(fit_s, 2),
        "train_span": series.span("train"),
        "val_span": series.span("val"),
        "step_seconds": series.step_seconds,
        "values": series.value_kind,
        "chosen": [c.to_dict() for c in choices],
        "report": report.to_dict(),
    }


def train_summary(
    name: str,
    combo: str,
    fit_s: float,
    report: FitReport,
    decision: dict[str, Any],
    event: dict[str, Any],
) -> dict[str, Any]:
    """One combo's line of the training summary: time, epochs, validation event metrics and
    the operating point."""
    return {
        "combo": combo,
        "detector": name,
        "fit_seconds": fit_s,
        "epochs": report.epochs_run,
        "seconds_per_epoch": report.seconds_per_epoch,
        "validation_event": {k: event[k] for k in ("precision", "recall", "f1", "false_alarms")},
        "operating_point": describe_operating_point(decision.get("operating_point")),
    }


def log_trained(summary: dict[str, Any], decision: dict[str, Any], directory: Path) -> None:
    """Log one trained detector: epochs and time, validation P/R/F1, threshold, where."""
    event = summary["validation_event"]
    log.info(
        "combo=%s detector=%s trained %d epochs in %.1fs (%.2fs/epoch); validation event "
        "P/R/F1 = %s/%s/%s, threshold %.3f (%s) -> %s",
        summary["combo"],
        summary["detector"],
        summary["epochs"],
        summary["fit_seconds"],
        summary["seconds_per_epoch"],
        event["precision"],
        event["recall"],
        event["f1"],
        decision["threshold_calibrated"],
        summary["operating_point"],
        directory,
    )


def describe_operating_point(op: dict[str, Any] | None) -> str:
    """``"expected 0.4 false alarms/day (0.12% of clean validation steps flagged)"``."""
    if not op:
        return "no alarm budget"
    runs = op.get("alarm_runs_per_day")
    text = (
        f"expected {runs:.2g} false alarms/day ({100 * op['flag_share']:.2g}% of clean "
        f"validation steps flagged, budget {100 * op['max_flag_share']:.2g}%)"
        if runs is not None and op.get("flag_share") is not None
        else "operating point unknown"
    )
    return text + ("; FELL BACK to the alarm budget" if op.get("fallback") else "")


def warn_if_budget_fallback(combo: str, name: str, decision: dict[str, Any]) -> None:
    op = decision.get("operating_point") or {}
    if op.get("fallback"):
        log.warning(
            "combo=%s detector=%s: no threshold within the alarm budget (%.2g%% of clean "
            "validation steps) catches an injected validation event; its threshold is the "
            "budget's (%.3f). The detector cannot separate spikes/dips from normal steps "
            "on this series' validation data.",
            combo,
            name,
            100 * float(op.get("max_flag_share") or 0),
            decision["threshold_calibrated"],
        )


def write_ensemble(frame: Any, root: Path, config: TrainConfig) -> Path:
    """Fit the ensemble of every combo from the trained artifacts; write ensemble.json."""
    from app.pipeline import fit_ensemble

    combos = {}
    for combo in sorted(frame["combo"].unique()):
        series = ComboSeries.from_frame(frame, combo)
        detectors = {
            name: detector_class(name).load(artifacts.detector_dir(root, name, combo))
            for name in detector_names()
        }
        combos[combo] = fit_ensemble(series, detectors, threshold_rule(config))
        log.info(
            "combo=%s ensemble: %s; %s",
            combo,
            {k: v for k, v in combos[combo].items() if k not in ("candidates", "operating_point")},
            describe_operating_point(combos[combo].get("operating_point")),
        )
    return artifacts.write_ensemble(root, combos, seed=config.seed)


def run(config: TrainConfig, detectors: list[str], root_for: dict[str, Path]) -> int:
    device = resolve_device(config)
    frame = load_from_args(config)
    combos = sorted(frame["combo"].unique())
    summary = []
    all_series = [ComboSeries.from_frame(frame, combo) for combo in combos]
    for name in detectors:
        fitted = [series_params(name, series, config) for series in all_series]
        for series, (params, _) in zip(all_series, fitted, strict=True):
            # every combo long enough before any training starts
            detector = detector_class(name)(params)
            check_min_length(
                frame[frame["combo"] == series.combo],
                window=detector.window,
                min_train_points=min_train_points(detector),
                hint=reference_hint(detector),
                step_seconds=series.step_seconds,
            )
        for series, fit in zip(all_series, fitted, strict=True):
            summary.append(train_one(name, series, config, device, root_for[name], fit))
    if summary:
        log.info("summary:\n%s", json.dumps(summary, indent=1, default=str))
    if config.detector in ("all", "ensemble"):
        path = write_ensemble(frame, config.output_dir, config)
        log.info("wrote %s", path)
    return 0


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging

    config = TrainConfig.from_args(build_parser().parse_args(argv))
    setup_logging()
    chosen = {"all": list(detector_names()), ENSEMBLE: []}
    detectors = chosen.get(config.detector, [config.detector])
    try:
        return run(config, detectors, {d: config.output_dir / d for d in detectors})
    except AnomalyError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
