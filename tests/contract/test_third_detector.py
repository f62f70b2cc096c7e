"""Proof of the detector contract (issue 17): a third detector that only the tests know
(``tests.contract.median_detector``), registered in ``app.catalog`` at test time, goes
through train → calibrate → save → load → offline score → stream scorer → evaluation, and
joins the ensemble, without any ``app/`` module naming it.

The real detectors train with ``--tiny --epochs 2`` on one demo combo; the median is numpy.
The second part runs the detector contract suite (``test_detector_contract``) against the
median, except its three network-only checks (see ``NETWORK_ONLY``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app import PROJECT_ROOT, catalog
from app.catalog import DetectorSpec
from app.config import DEFAULT_MAX_AHEAD_STEPS, DEFAULT_MAX_GAP_HOURS
from app.data import load_counts
from app.detectors.base import read_artifact
from app.errors import ArtifactError
from app.postprocess.decision import Decision, EnsembleDecision
from app.registry import ModelRegistry
from app.streaming import scorer
from app.streaming.state import ComboWindowState, StepCount, advance
from app.timebase import window_seed
from tests.contract import test_detector_contract as suite
from tests.contract.median_detector import MedianDetector, MedianParams
from tests.contract.test_detector_contract import Data, _fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MEDIAN = DetectorSpec(
    "median", "Median", "tests.contract.median_detector", "MedianDetector", "MedianParams"
)
NAMES = ("fcvae", "vaegan", "median")
DATA = PROJECT_ROOT / "data" / "synthetic_transactions.csv"
COMBO = "Accel_CMP"
#: Suite checks left out, and why: they test what a trained network does.
NETWORK_ONLY = {
    "test_artifact_errors": "weights that do not match a hidden_dim one larger (the median "
    "has no network; its own artifact errors are checked below)",
    "test_same_seed_same_weights_history_and_scores": "seed-dependent weight matrices and "
    "the training loop's history (kl_weight, lr)",
    "test_seed_changes_the_draws_but_not_much_the_score": "latent draws (the median is "
    "deterministic, which the contract allows)",
}
#: Every check of the suite but the network-only ones, run here against the median (this
#: module's ``trained`` fixture shadows the suite's): a check added to the suite runs here
#: too, and must hold for any ``Detector`` or be listed in ``NETWORK_ONLY``.
SUITE = [
    check
    for name, check in sorted(vars(suite).items())
    if name.startswith("test_") and name not in NETWORK_ONLY
]
globals().update({check.__name__: check for check in SUITE})  # pytest collects them here


@pytest.fixture(scope="module")
def registered() -> Iterator[None]:
    """The median in ``app.catalog`` (the same dict every module reads) for this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(catalog.DETECTORS, MEDIAN.name, MEDIAN)
        assert catalog.detector_names() == NAMES
        yield


@pytest.fixture(scope="module")
def models(
    registered: None, one_torch_thread: None, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from app.train import main

    root = tmp_path_factory.mktemp("models")
    argv = ["--detector", "all", "--tiny", "--epochs", "2", "--no-progress"]
    argv += ["--combos", COMBO, "--data-path", str(DATA), "--output-dir", str(root)]
    assert main(argv) == 0
    return root


@pytest.fixture(scope="module")
def scores(models: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """``python -m app.score`` over every hour of the combo (the ensemble decides)."""
    from app.score import main

    out = tmp_path_factory.mktemp("scores") / "scores.csv"
    argv = ["--model-dir", str(models), "--data-path", str(DATA), "--combos", COMBO]
    assert main([*argv, "--output", str(out)]) == 0
    return pd.read_csv(out, float_precision="round_trip")


def test_training_saved_the_median_and_an_ensemble_over_three(models: Path) -> None:
    for name in NAMES:
        assert (models / name / COMBO / "weights.pt").is_file(), name
    meta, weights = read_artifact(models / "median" / COMBO, "median")
    assert weights == {}  # all it learnt is in meta.json
    decision = Decision.from_dict(meta["decision"])
    assert decision.calibrator is not None and np.isfinite(decision.threshold)
    assert meta["combo"] == COMBO and meta["validation_metrics"]["event"]["n_events"] > 0
    assert meta["params"] == MedianDetector.tiny_params().model_dump()
    assert meta["training"]["report"]["epochs_run"] == 1
    loaded = MedianDetector.load(models / "median" / COMBO)
    assert loaded.scale_ == meta["scale"] and loaded.meta["decision"] == meta["decision"]
    ensemble = json.loads((models / "ensemble.json").read_text())["combos"][COMBO]
    assert len(ensemble["candidates"]) == 6 and np.isfinite(ensemble["threshold"])


def test_the_bundle_merges_all_three_calibrated_scores(models: Path) -> None:
    registry = ModelRegistry(models)
    bundle = registry.bundle(COMBO)
    assert bundle.detector == "ensemble" and tuple(bundle.models) == NAMES
    assert isinstance(bundle.models["median"], MedianDetector)
    assert bundle.window == max(m.window for m in bundle.models.values())
    frame = load_counts(DATA)
    values = frame[frame["combo"] == COMBO]["value"].to_numpy(dtype=np.float64)
    ends = np.arange(bundle.window + 500, values.size, 29)
    ends = ends[np.isfinite(values[ends])]
    windows = np.stack([values[e - bundle.window + 1 : e + 1] for e in ends])
    seeds = np.array([window_seed(COMBO, int(e), 0) for e in ends], dtype=np.int64)
    out = bundle.score(windows, seeds)
    for name in NAMES:
        raw = out[f"{name}_score"]
        assert raw.shape == (len(ends),) and np.isfinite(raw).all(), name
        np.testing.assert_array_equal(
            out[f"{name}_calibrated"], bundle.decisions[name].calibrate(raw)
        )
    rule = bundle.decision()
    assert isinstance(rule, EnsembleDecision)
    calibrated = {n: out[f"{n}_calibrated"] for n in NAMES}
    np.testing.assert_array_equal(out["score"], rule.combine(calibrated))
    np.testing.assert_array_equal(out["is_anomaly"], rule.flags(out["score"]))
    settings = rule.settings
    if settings["mode"] == "max" or settings["weight_fcvae"] < 1.0:  # the median has a say
        without = rule.combine({n: calibrated[n] for n in ("fcvae", "vaegan")})
        assert not np.array_equal(out["score"], without)


def test_app_score_writes_the_median_and_flags_by_the_ensemble(
    models: Path, scores: pd.DataFrame
) -> None:
    columns = list(scores.columns)
    assert columns.index("vaegan_calibrated") + 1 == columns.index("median_score")
    assert columns.index("median_calibrated") + 1 == columns.index("detector")
    scored = scores[scores["status"] == "scored"]
    assert len(scored) > 2000 and (scored["detector"] == "ensemble").all()
    meta = json.loads((models / "median" / COMBO / "meta.json").read_text())
    median = Decision.from_dict(meta["decision"])
    raw = scored["median_score"].to_numpy(dtype=np.float64)
    assert np.isfinite(raw).all()
    np.testing.assert_array_equal(scored["median_calibrated"], median.calibrate(raw))
    settings = json.loads((models / "ensemble.json").read_text())["combos"][COMBO]
    rule = EnsembleDecision.from_dict(settings)
    combined = rule.combine({n: scored[f"{n}_calibrated"].to_numpy() for n in NAMES})
    np.testing.assert_array_equal(scored["score"], combined)
    assert (scored["threshold"] == rule.threshold).all()
    np.testing.assert_array_equal(scored["is_anomaly"].astype(bool), rule.flags(combined))


def _stream(models: Path, frame: pd.DataFrame, window: int, batch: int) -> list[dict[str, Any]]:
    """Hours fed through ``advance`` in micro-batches of ``batch`` (state carried), each
    batch scored and shaped for Kafka by ``emissions_to_messages``, as the job does; the
    scored topic's records, parsed."""
    state = ComboWindowState(COMBO)
    steps = (frame["timestamp"].astype("int64") // 10**9 // 3600).to_numpy()
    counts = frame["value"].to_numpy(dtype=np.float64)
    out: list[dict[str, Any]] = []
    for start in range(0, len(steps), batch):
        part = slice(start, start + batch)
        rows = [
            StepCount(COMBO, int(s), float(c))
            for s, c in zip(steps[part], counts[part], strict=True)
        ]
        state, emissions = advance(
            state,
            rows,
            window=window,
            max_gap_steps=DEFAULT_MAX_GAP_HOURS,
            max_ahead_steps=DEFAULT_MAX_AHEAD_STEPS,
        )
        pdf = pd.DataFrame([{**e.to_record(), "produced_at": None} for e in emissions])
        messages = scorer.emissions_to_messages(
            pdf,
            model_path=str(models),
            detector="ensemble",
            n_samples=None,
            torch_threads=1,
            scored_topic="scored",
            deadletter_topic="dead",
            source_topic="counts",
            scored_at=scorer.batch_time_iso(1_700_000_000_000 + start),
        )
        assert set(messages["topic"]) == {"scored"}
        out.extend(json.loads(v) for v in messages["value"])
    return out


def test_the_stream_scores_the_hours_as_app_score_does(
    models: Path, scores: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scorer, "_REGISTRIES", {})  # this test's registry only
    window = ModelRegistry(models).window()
    frame = load_counts(DATA)
    frame = frame[(frame["combo"] == COMBO) & ~frame["missing"]].sort_values("timestamp")
    records = _stream(models, frame.iloc[-400:], window, batch=37)
    streamed = pd.DataFrame([r for r in records if r["status"] == "scored"])
    assert len(streamed) >= 400 - window - 5
    keys = list(next(r for r in records if r["status"] == "scored"))  # the wire order
    assert keys.index("vaegan_calibrated") + 1 == keys.index("median_score")
    assert keys.index("median_calibrated") + 1 == keys.index("detector")
    offline = scores.set_index("timestamp").loc[streamed["hour"]]
    for column in ("score", "threshold", "median_score", "median_calibrated", "expected"):
        np.testing.assert_array_equal(streamed[column], offline[column], err_msg=column)
    np.testing.assert_array_equal(streamed["is_anomaly"], offline["is_anomaly"].astype(bool))
    assert (streamed["model_version"].to_numpy() == offline["model_version"].to_numpy()).all()
    assert streamed["model_version"].iloc[0].count("+") == 2  # three artifacts


def test_evaluation_reports_the_median(models: Path, tmp_path: Path) -> None:
    from app.evaluate import main

    argv = ["detailed", "--model-dir", str(models), "--output-dir", str(tmp_path), "--no-plots"]
    assert main([*argv, "--data-path", str(DATA), "--combos", COMBO]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["_meta"]["decision_detector"] == "ensemble"
    for name in (*NAMES, "ensemble", "seasonal_baseline"):
        for result in (metrics[name]["per_combo"][COMBO], metrics[name]["overall"]):
            assert {"precision", "recall", "f1"} <= set(result["event"]), name
            assert result["event"]["n_events"] > 0, name
    assert "| median |" in (tmp_path / "metrics.md").read_text()


# --- the contract suite against the median ----------------------------------------------------


@pytest.fixture(scope="module")
def trained(one_torch_thread: None) -> tuple[MedianDetector, Data]:
    """The suite's ``trained`` fixture for the median (shadows the suite's own here)."""
    data = Data(MedianDetector.tiny_params().window)
    detector = _fit(MedianDetector, data, seed=0)
    assert isinstance(detector, MedianDetector)
    return detector, data


def test_the_left_out_checks_are_the_suites() -> None:
    """``NETWORK_ONLY`` names checks the suite has (a renamed one would run unseen)."""
    assert set(NETWORK_ONLY) <= {name for name in vars(suite) if name.startswith("test_")}
    assert len(SUITE) >= 10


def test_median_artifact_errors(trained: tuple[MedianDetector, Data], tmp_path: Path) -> None:
    detector, _ = trained
    detector.save(tmp_path / "good")
    meta = json.loads((tmp_path / "good" / "meta.json").read_text())

    def edited(name: str, **changes: Any) -> Path:
        directory = tmp_path / name
        detector.save(directory)
        (directory / "meta.json").write_text(json.dumps({**meta, **changes}))
        return directory

    with pytest.raises(ArtifactError, match="does not exist"):
        MedianDetector.load(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match="'fcvae' artifact"):
        MedianDetector.load(edited("other", detector="fcvae"))
    with pytest.raises(ArtifactError, match="params"):
        MedianDetector.load(edited("params", params={"window": "x"}))
    with pytest.raises(ArtifactError, match="scale"):
        MedianDetector.load(edited("scale", scale=0.0))
    assert MedianDetector.load(tmp_path / "good").params == MedianParams(**meta["params"])


def test_defaults_fit_a_detector_without_epochs() -> None:
    """Without ``--tiny`` the defaults fit epochs to a long history; a detector whose params
    have no ``epochs`` (it trains no network) is left as it is (it raised AttributeError)."""
    from app.pipeline import fit_to_history
    from app.timebase import TimeBase

    update, choices = fit_to_history(MedianParams(), timebase=TimeBase(60), n_train=30_000)
    assert "epochs" not in update and all(c.name != "epochs" for c in choices)
