"""What a new user meets with their own series (issue 15): the data's own time step
everywhere, defaults that fit short histories, messy timestamps and non-count values on
request, and thresholds that cannot collapse to "alarm always".

Each test failed on the code before the fix it names.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data import load_counts, value_kind_of
from app.errors import ContractError, DataError
from app.pipeline import (
    EPOCH_REFERENCE_WINDOWS,
    MIN_EPOCHS,
    MIN_PATIENCE,
    ComboSeries,
    calibrate_scores,
    detector_class,
    min_train_points,
    params_class,
)
from app.postprocess.threshold import choose_threshold, inject_anomalies
from app.timebase import TimeBase, infer_freq
from app.train import _params, build_parser
from app.train_config import TrainConfig


def _csv(path: Path, stamps: pd.DatetimeIndex, values: np.ndarray, **extra: object) -> Path:
    frame = pd.DataFrame(
        {"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "count": values, **extra}
    )
    frame.to_csv(path, index=False)
    return path


def _daily(n: int, per_day: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.poisson(40 + 20 * np.sin(2 * np.pi * np.arange(n) / per_day))


# --------------------------------------------------------------------------- 1. the step


def test_app_score_scores_every_5_minute_step_after_warm_up(tmp_path: Path) -> None:
    """It scored one row per clock hour (the step defaulted to 3600 s)."""
    from app.score import main as score_main
    from app.train import main as train_main

    stamps = pd.date_range("2025-03-03", periods=2 * 288, freq="5min", tz="UTC")
    csv = _csv(tmp_path / "s.csv", stamps, _daily(stamps.size, 288), combo="s1")
    models, out = tmp_path / "models", tmp_path / "scores.csv"
    common = ["--data-path", str(csv)]  # --freq left out: inferred as 5min
    assert (
        train_main(
            [
                "--detector",
                "fcvae",
                "--tiny",
                "--epochs",
                "2",
                "--no-progress",
                *common,
                "--output-dir",
                str(models),
            ]
        )
        == 0
    )
    meta = json.loads((models / "fcvae" / "s1" / "meta.json").read_text())
    assert meta["training"]["step_seconds"] == 300
    assert score_main(["--model-dir", str(models / "fcvae"), *common, "--output", str(out)]) == 0
    scores = pd.read_csv(out)
    window = meta["params"]["window"]
    assert len(scores) == stamps.size
    assert (scores["status"] == "scored").sum() == stamps.size - (window - 1)
    assert pd.to_datetime(scores["timestamp"]).diff().dropna().eq(pd.Timedelta("5min")).all()


def test_app_score_refuses_data_at_another_step_than_the_models(tmp_path: Path) -> None:
    from app.score import main as score_main

    stamps = pd.date_range("2025-03-03", periods=300, freq="5min", tz="UTC")
    csv = _csv(tmp_path / "s.csv", stamps, _daily(stamps.size, 288), combo="Accel_CMP")
    # The shipped models are hourly.
    assert score_main(["--data-path", str(csv), "--output", str(tmp_path / "o.csv")]) == 1


def test_time_periods_become_steps_of_the_series() -> None:
    assert (TimeBase(3600).day, TimeBase(3600).week) == (24, 168)
    assert (TimeBase(60).day, TimeBase(300).hours_to_steps(24)) == (1440, 288)
    assert TimeBase(1800).describe(96) == "96 steps (2 days)"
    stamps = pd.Series(pd.date_range("2025-01-01", periods=50, freq="30min"))
    assert infer_freq(stamps.drop(index=[3, 7, 8])) == "30min"


# --------------------------------------------------------------------------- 2. thresholds


def test_threshold_cannot_flag_most_of_clean_validation() -> None:
    """Runs-based F1 made 'flag everything' the best threshold (one false-alarm run)."""
    rng = np.random.default_rng(0)
    n = 2000
    scores = rng.random(n)
    labels = np.zeros(n, bool)
    labels[500:503] = labels[1500:1502] = True  # events no better than noise
    old = choose_threshold(scores, labels)
    assert (scores > old.threshold).mean() > 0.5  # the collapse, reproduced
    new = choose_threshold(scores, labels, clean=~labels, max_flag_share=0.005)
    flagged = (scores[~labels] > new.threshold).mean()
    assert flagged <= 0.005
    assert new.operating_point is not None and new.operating_point["flag_share"] <= 0.005


def test_calibration_falls_back_to_the_budget_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A detector that cannot tell injected events from normal steps gets the budget's
    threshold, recorded in the decision, with a warning."""
    n = 24 * 60
    stamps = pd.date_range("2025-01-06", periods=n, freq="h", tz="UTC")
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - 3 * n // 4))
    series = ComboSeries(
        combo="c",
        timestamps=pd.DatetimeIndex(stamps),
        values=np.full(n, 100.0),
        labels=np.zeros(n, bool),
        event_ids=np.full(n, ""),
        split=split,
        step_seconds=3600,
    )
    rng = np.random.default_rng(1)

    def blind(values: np.ndarray, positions: np.ndarray) -> np.ndarray:  # ignores values
        out = np.full(values.shape, np.nan)
        out[positions] = rng.random(len(positions))
        return out

    with caplog.at_level(logging.WARNING):
        chosen, _ = calibrate_scores(blind, series, copies=2)
    decision = chosen.to_dict()
    op = decision["operating_point"]
    assert op["fallback"] is True and op["flag_share"] <= 0.005
    assert decision["alarm_budget"] == 0.005
    assert any("alarm budget" in r.message for r in caplog.records)


# --------------------------------------------------------------------------- 3. history


def _fitted(  # type: ignore[no-untyped-def]
    step_seconds: int, n_train: int, *argv: str, name: str = "fcvae", value_kind: str = "counts"
):
    config = TrainConfig.from_args(build_parser().parse_args(list(argv)))
    params, choices = _params(name, config, step_seconds, n_train, value_kind)
    return params, {c.name: c for c in choices}


@pytest.mark.parametrize(
    ("step_seconds", "days"),
    [(60, 3), (300, 3), (3600, 21)],
    ids=["3 days of 1-minute", "3 days of 5-minute", "3 weeks of hourly"],
)
def test_defaults_fit_a_short_history(step_seconds: int, days: int) -> None:
    """The defaults asked for 8,568 training steps whatever the step."""
    n_train = int(0.7 * days * 86_400 / step_seconds)
    for name in ("fcvae", "vaegan"):
        params, chosen = _fitted(step_seconds, n_train, name=name)
        detector = detector_class(name)(params)
        assert min_train_points(detector) <= n_train, (name, params.window)
        assert "window" in chosen and chosen["window"].why
    params, chosen = _fitted(step_seconds, n_train)
    assert params.reference_weeks == 0 and "too little history" in chosen["reference_weeks"].why
    assert params.clean_period == TimeBase(step_seconds).day


def test_long_hourly_history_keeps_the_shipped_configuration() -> None:
    params, _ = _fitted(3600, 98 * 24)
    assert (params.window, params.reference_weeks, params.clean_period) == (168, 4, 24)
    assert _fitted(3600, 98 * 24, "--reference-weeks", "2")[0].reference_weeks == 2


def test_long_fine_grained_history_trains_in_bounded_optimiser_steps() -> None:
    """75 epochs over 10,800 one-minute windows took FCVAE about 12 minutes a series."""
    for name in ("fcvae", "vaegan"):
        default = params_class(name)()
        same, chosen = _fitted(3600, 98 * 24, name=name)  # the demo's history: unchanged
        assert (same.epochs, same.patience) == (default.epochs, default.patience)
        assert "epochs" not in chosen
        params, chosen = _fitted(60, 10_800, name=name)
        assert params.epochs * 10_800 <= default.epochs * EPOCH_REFERENCE_WINDOWS * 1.05
        assert params.epochs >= MIN_EPOCHS and params.patience >= MIN_PATIENCE
        assert params.kl_warmup_epochs < params.epochs and "optimiser steps" in chosen["epochs"].why
        assert _fitted(60, 10_800, "--epochs", "40", name=name)[0].epochs == 40
    assert _fitted(60, 10**6)[0].epochs == MIN_EPOCHS


def test_vaegan_window_is_its_own_option() -> None:
    """--window changed VAE+GAN's window too."""
    assert _fitted(3600, 5000, "--window", "96")[0].window == 96
    assert _fitted(3600, 5000, "--window", "96", name="vaegan")[0].window == 24
    assert _fitted(3600, 5000, "--vaegan-window", "12", name="vaegan")[0].window == 12


def test_too_short_says_it_in_time_and_steps(tmp_path: Path) -> None:
    from app.train import main as train_main

    stamps = pd.date_range("2025-03-03", periods=40, freq="5min", tz="UTC")
    csv = _csv(tmp_path / "s.csv", stamps, _daily(40, 288), combo="s1")
    with pytest.raises(DataError, match=r"has 28 steps \(2.3 h\).*at least 48 steps \(4 h\)"):
        from app.data import check_min_length

        frame = load_counts(csv, freq="auto")
        check_min_length(frame, window=16, min_train_points=48, step_seconds=300)
    assert (
        train_main(
            [
                "--detector",
                "fcvae",
                "--data-path",
                str(csv),
                "--no-progress",
                "--output-dir",
                str(tmp_path / "m"),
            ]
        )
        == 1
    )


# --------------------------------------------------------------------------- 4. messy input


def test_resample_aggregates_irregular_and_repeated_timestamps(tmp_path: Path) -> None:
    times = [
        "2025-01-01T00:00:07Z",
        "2025-01-01T00:03:00Z",
        "2025-01-01T00:03:00Z",
        "2025-01-01T00:05:59Z",
        "2025-01-01T00:17:00Z",
    ]
    path = tmp_path / "irregular.csv"
    pd.DataFrame({"timestamp": times, "combo": "k", "count": [1, 2, 3, 4, 5]}).to_csv(
        path, index=False
    )
    with pytest.raises(ContractError, match="--resample"):
        load_counts(path, freq="5min")
    frame = load_counts(path, freq="5min", resample="sum")
    np.testing.assert_array_equal(frame["value"], [6.0, 4.0, np.nan, 5.0])
    assert frame["missing"].tolist() == [False, False, True, False]
    assert load_counts(path, freq="5min", resample="mean")["value"].iloc[0] == 2.0
    assert load_counts(path, freq="5min", resample="last")["value"].iloc[0] == 3.0


def test_real_values_load_and_inject_on_their_own_scale(tmp_path: Path) -> None:
    stamps = pd.date_range("2025-01-01", periods=400, freq="5min", tz="UTC")
    values = np.sin(np.arange(400) / 20) * 0.3 - 0.1  # normalised, negative, fractional
    path = _csv(tmp_path / "kpi.csv", stamps, values, combo="kpi")
    with pytest.raises(ContractError, match="--values real"):
        load_counts(path, freq="auto")
    frame = load_counts(path, freq="auto", values="real")
    assert frame.attrs["values"] == "real" and frame["value"].min() < 0
    new, labels, _ = inject_anomalies(
        values, np.random.default_rng(0), n_events=3, additive_scale=0.05, min_gap_steps=20
    )
    assert labels.sum() >= 3 and np.all(np.abs(new[labels] - values[labels]) >= 0.15 - 1e-12)
    params, chosen = _fitted(300, 5000, value_kind="real")
    assert params.log_transform is False and "log_transform" in chosen


def test_normalised_values_train_and_score_with_default_options(tmp_path: Path) -> None:
    """A normalised KPI (negative, fractional) needed --values real on both CLIs; without
    it training stopped at the first negative value."""
    from app.score import main as score_main
    from app.train import main as train_main

    assert value_kind_of([0, 3, 7]) == "counts"
    assert value_kind_of([0.25, 3]) == value_kind_of([-2, 3]) == "real"
    stamps = pd.date_range("2025-03-03", periods=2 * 288, freq="5min", tz="UTC")
    values = np.sin(2 * np.pi * np.arange(stamps.size) / 288) * 0.4 - 0.1
    csv = _csv(tmp_path / "kpi.csv", stamps, values, combo="kpi")
    models, out = tmp_path / "models", tmp_path / "scores.csv"
    train = ["--detector", "fcvae", "--tiny", "--epochs", "2", "--no-progress"]
    assert train_main([*train, "--data-path", str(csv), "--output-dir", str(models)]) == 0
    meta = json.loads((models / "fcvae" / "kpi" / "meta.json").read_text())
    assert meta["training"]["values"] == "real" and meta["params"]["log_transform"] is False
    argv = ["--model-dir", str(models / "fcvae"), "--data-path", str(csv), "--output", str(out)]
    assert score_main(argv) == 0
    scores = pd.read_csv(out)
    assert (scores["status"] == "scored").sum() == stamps.size - (meta["params"]["window"] - 1)


def test_injections_are_not_rounded_away_on_small_fractional_values() -> None:
    """Injected spikes were rounded to whole counts, erasing them on values below 1."""
    x = np.full(300, 0.4)
    new, labels, _ = inject_anomalies(x, np.random.default_rng(0), n_events=4)
    assert labels.any() and (new[labels] != x[labels]).all()


def test_too_few_injections_fit_warns_once_per_calibration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    x = np.full(100, 50.0)
    with caplog.at_level(logging.WARNING):
        inject_anomalies(x, np.random.default_rng(0), n_events=12, min_gap_steps=24)
        inject_anomalies(x, np.random.default_rng(0), n_events=12, min_gap_steps=24, quiet=True)
    assert sum("anomalies fit in 100 steps" in r.message for r in caplog.records) == 1


def test_days_of_history_get_a_same_time_of_day_reference() -> None:
    """Three weeks of 5-minute training data hold no weekly reference within the window
    limit, but a week of daily ones: each step against the same time on the 7 days before."""
    assert _fitted(300, 23 * 288)[0].reference_weeks == 0  # off by default
    params, chosen = _fitted(300, 23 * 288, "--daily-reference")
    assert (params.reference_period, params.reference_weeks) == ("day", 7)
    assert "same time of day" in chosen["reference_weeks"].why
    detector = detector_class("fcvae")(params)
    assert detector.reference_lag == 288 and detector.window == 168 + 7 * 288
    assert min_train_points(detector) <= 23 * 288
    # Weeks win where they fit, and an explicit --reference-weeks keeps weeks.
    assert _fitted(3600, 98 * 24)[0].reference_period == "week"
    explicit = _fitted(300, 23 * 288, "--daily-reference", "--reference-weeks", "1")[0]
    assert explicit.reference_period == "week"
