"""FCVAE: network, loss, augmentation, seeded draws, artifacts and a small end-to-end check.

CPU only.  The detector tests share one model, trained in a few seconds with
``FCVAEDetector.tiny_params()`` on the spiky series of ``detector_helpers``.  Seeds, batch
and thread independence, bad series and broken artifacts are the contract suite's
(``tests/contract/test_detector_contract.py``), checked there for every detector.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.detectors.augment import (
    augment_batch,
    missing_injection,
    pattern_mutation,
    value_mutation,
)
from app.detectors.base import (
    META_FILE,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    FitReport,
    read_artifact,
    validate_windows,
    write_artifact,
)
from app.detectors.draws import splitmix64, window_normals
from app.detectors.fcvae import FCVAEDetector, FCVAEParams
from app.detectors.fcvae.loss import cm_elbo, gaussian_nll
from app.detectors.fcvae.network import FCVAENetwork, stable_softplus
from app.detectors.training import kl_weight_at
from app.errors import ArtifactError, ContractError
from tests.unit.detector_helpers import (
    TRAIN_HOURS,
    W,
    assert_every_spike_beats_clean_windows,
    fit_tiny,
    spiky_series,
    windows_ending_at,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_network(**overrides: object) -> FCVAENetwork:
    detector = FCVAEDetector(FCVAEDetector.tiny_params().model_copy(update=overrides))
    torch.manual_seed(0)
    return detector._build_network().eval()


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    return spiky_series()


@pytest.fixture(scope="module")
def fitted(series: np.ndarray) -> FCVAEDetector:
    return fit_tiny(FCVAEDetector, series)


# --- network ----------------------------------------------------------------------------------


def test_network_shapes() -> None:
    net = tiny_network()
    p = FCVAEDetector.tiny_params()
    x = torch.randn(5, W)
    out = net(x, torch.randn(5, p.latent_dim))
    assert out["mu_x"].shape == out["var_x"].shape == (5, W)
    assert out["mu_z"].shape == out["var_z"].shape == out["z"].shape == (5, p.latent_dim)
    assert (out["var_x"] > 0).all() and (out["var_z"] > 0).all()
    assert net.condition(x).shape == (5, 2 * p.cond_dim)
    assert net.lfm.n_tokens == (W - p.sub_window) // p.stride + 1
    mu, var = net.last_point_samples(
        x, torch.randn(5, 3, p.latent_dim), torch.randn(5, 7, p.latent_dim)
    )
    assert mu.shape == var.shape == (5, 7)
    assert set(net.state_dicts()) == {"gfm", "lfm", "encoder", "decoder"}


def test_default_network_matches_design() -> None:
    # DESIGN's W = 24 is the reference setting; we ship one week (168 h) so the window
    # sees the weekly cycle (TECHNICAL.md, "Window length").
    p = FCVAEParams()
    assert (p.window, p.latent_dim, p.hidden_dim, p.n_samples, p.mcmc_rounds) == (
        168,
        8,
        100,
        16,
        10,
    )
    assert (p.lr, p.grad_clip, p.batch_size) == (5e-4, 2.0, 256)


def test_lfm_last_sub_window_ends_at_last_point() -> None:
    net = tiny_network(window=23, sub_window=8, stride=4)  # (23 - 8) % 4 = 3: offset needed
    assert net.lfm.offset == 3 and net.lfm.n_tokens == 4


def test_condition_ignores_the_last_value() -> None:
    net = tiny_network()
    x = torch.randn(6, W)
    y = x.clone()
    y[:, -1] = torch.tensor([1e3, -1e3, 0.0, 5.0, 1e-7, 42.0])
    assert torch.equal(net.condition(x), net.condition(y))
    x2 = x.clone()
    x2[:, -2] += 1.0  # an earlier point does change it
    assert not torch.equal(net.condition(x), net.condition(x2))


def test_last_token_only_condition_equals_the_full_one() -> None:
    net = tiny_network(window=168, sub_window=8, stride=4)  # 41 tokens, as shipped
    net.eval()
    x = torch.randn(16, 168)
    with torch.inference_mode():
        full, fast = net.condition(x), net.condition(x, last_only=True)
    assert full.shape == fast.shape
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-5)
    x2 = x.clone()
    x2[:, 3] += 1.0  # the first token still reaches the kept one through attention
    with torch.inference_mode():
        assert not torch.equal(net.condition(x2, last_only=True), fast)


def test_stable_softplus_matches_torch_and_is_position_independent() -> None:
    x = torch.randn(10_000) * 10
    assert torch.allclose(stable_softplus(x), F.softplus(x), atol=1e-6)
    full = stable_softplus(x)
    single = torch.stack([stable_softplus(x[i : i + 1])[0] for i in range(300)])
    assert torch.equal(full[:300], single)


# --- loss -------------------------------------------------------------------------------------


def _loss_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, latent = 8, 4
    return {
        "x": torch.randn(b, W, generator=g),
        "mu_x": torch.randn(b, W, generator=g),
        "var_x": torch.rand(b, W, generator=g) + 0.1,
        "mu_z": torch.randn(b, latent, generator=g),
        "var_z": torch.rand(b, latent, generator=g) + 0.1,
    }


def test_loss_terms_and_masked_points_are_ignored() -> None:
    t = _loss_inputs()
    alpha = torch.ones(8, W)
    alpha[0, 3] = alpha[5, -1] = 0.0
    base = cm_elbo(**t, alpha=alpha, kl_weight=0.5)
    assert set(base) == {"loss", "nll", "kl", "kl_exact"}
    assert torch.isclose(base["loss"], base["nll"] + 0.5 * base["kl"])
    for value in (1e6, -3.0, float("nan"), float("inf")):
        x = t["x"].clone()
        x[0, 3] = x[5, -1] = value
        changed = cm_elbo(**{**t, "x": x}, alpha=alpha, kl_weight=0.5)
        for name in base:
            assert torch.equal(changed[name], base[name]), (value, name)
    x = t["x"].clone()
    x[1, 3] += 1.0  # an unmasked point does count
    assert not torch.equal(cm_elbo(**{**t, "x": x}, alpha=alpha, kl_weight=0.5)["nll"], base["nll"])


def test_nll_is_averaged_over_all_points_and_kl_is_the_closed_form() -> None:
    t = _loss_inputs(1)
    ones = torch.ones(8, W)
    terms = cm_elbo(**t, alpha=ones, kl_weight=1.0)
    expected_nll = gaussian_nll(t["x"], t["mu_x"], t["var_x"]).mean()
    assert torch.isclose(terms["nll"], expected_nll)
    q = torch.distributions.Normal(t["mu_z"], t["var_z"].sqrt())
    prior = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    assert torch.isclose(terms["kl"], torch.distributions.kl_divergence(q, prior).mean())
    half = ones.clone()
    half[:, : W // 2] = 0.0  # β = 0.5 shrinks the prior term only
    terms_half = cm_elbo(**t, alpha=half, kl_weight=1.0)
    prior_part = 0.5 * (t["mu_z"] ** 2 + t["var_z"])
    assert torch.isclose(terms["kl"] - terms_half["kl"], 0.5 * prior_part.mean())
    # The logged KL is the divergence itself, whatever β: never negative.
    assert torch.isclose(terms_half["kl_exact"], terms["kl"])
    tight = {**t, "mu_z": torch.zeros(8, 4), "var_z": torch.ones(8, 4)}
    assert (
        float(cm_elbo(**tight, alpha=half, kl_weight=1.0)["kl"])
        < 0
        <= float(cm_elbo(**tight, alpha=half, kl_weight=1.0)["kl_exact"])
    )
    nothing = cm_elbo(**t, alpha=torch.zeros(8, W), kl_weight=1.0)
    assert float(nothing["nll"]) == 0.0


def test_kl_annealing_is_linear() -> None:
    assert [kl_weight_at(e, 5) for e in (0, 1, 5, 9)] == [0.0, 0.2, 1.0, 1.0]


# --- augmentation -----------------------------------------------------------------------------


def _batch(b: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    g = torch.Generator().manual_seed(11)
    return torch.randn(b, W, generator=g), torch.ones(b, W, dtype=torch.bool), g


def _assert_masks_exactly_changes(
    originals: torch.Tensor, x_aug: torch.Tensor, ok_aug: torch.Tensor
) -> None:
    changed = x_aug != originals
    assert torch.equal(changed, ~ok_aug)


def test_value_mutation_masks_only_the_shifted_last_point() -> None:
    x, ok, _ = _batch()
    idx_gen = torch.Generator().manual_seed(5)
    x_aug, ok_aug = value_mutation(x, ok, 0.05, idx_gen)
    assert x_aug.shape == (10, W)
    # recover each copy's source row: all points but the last match it exactly
    sources = [int(torch.nonzero((x[:, :-1] == row[:-1]).all(dim=1))[0]) for row in x_aug]
    _assert_masks_exactly_changes(x[sources], x_aug, ok_aug)
    shift = (x_aug[:, -1] - x[sources, -1]).abs()
    assert bool(((shift >= 0.5 - 1e-5) & (shift <= 10.0 + 1e-5)).all())
    assert torch.equal(x, _batch()[0])  # inputs untouched


def test_pattern_mutation_masks_only_the_swapped_tail() -> None:
    x, ok, _ = _batch()
    x_aug, ok_aug = pattern_mutation(x, ok, 0.1, torch.Generator().manual_seed(9))
    assert x_aug.shape == (20, W)
    for row, row_ok in zip(x_aug, ok_aug, strict=True):
        source = int(torch.nonzero((x[:, :1] == row[:1]).all(dim=1))[0])
        changed = row != x[source]
        assert torch.equal(changed, ~row_ok)
        start = int(torch.nonzero(changed)[0])
        assert W // 4 <= start <= W - 1
        assert bool(changed[start:].all())  # the whole tail comes from one donor window
        donors = (x[:, start:] == row[start:]).all(dim=1)
        assert bool(donors.any()) and not bool(donors[source])


def test_missing_injection_masks_only_zeroed_points() -> None:
    x, ok, g = _batch(1000)
    x_aug, ok_aug = missing_injection(x, ok, 0.01, g)
    _assert_masks_exactly_changes(x, x_aug, ok_aug)
    assert bool((x_aug[~ok_aug] == 0).all())
    assert 0.005 < float((~ok_aug).float().mean()) < 0.02


def test_augment_batch_is_seeded_and_keeps_originals() -> None:
    x, ok, _ = _batch()
    kwargs = {"value_rate": 0.05, "pattern_rate": 0.1, "missing_rate": 0.01}
    a = augment_batch(x, ok, torch.Generator().manual_seed(1), **kwargs)
    b = augment_batch(x, ok, torch.Generator().manual_seed(1), **kwargs)
    c = augment_batch(x, ok, torch.Generator().manual_seed(2), **kwargs)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (200 + 10 + 20, W)
    kept = a[1][:200]
    assert torch.equal(a[0][:200][kept], x[kept])  # originals differ only where injected


# --- seeded draws -----------------------------------------------------------------------------


def test_splitmix64_reference_values() -> None:
    # splitmix64 with state 0: the first two outputs of the reference generator
    state = np.array([0x9E3779B97F4A7C15, 2 * 0x9E3779B97F4A7C15 % 2**64], dtype=np.uint64)
    assert [hex(int(v)) for v in splitmix64(state)] == ["0xe220a8397b1dcdaf", "0x6e789e6aa1b965f4"]


def test_window_normals_depend_on_the_seed_alone() -> None:
    seeds = np.random.default_rng(0).integers(-(2**63), 2**63 - 1, 2000, dtype=np.int64)
    draws = window_normals(seeds, 208)
    assert draws.shape == (2000, 208) and draws.dtype == np.float32
    assert abs(float(draws.mean())) < 0.01 and abs(float(draws.std()) - 1.0) < 0.01
    for i in (0, 1, 999, 1999):
        assert np.array_equal(window_normals(seeds[i : i + 1], 208)[0], draws[i])
    assert np.array_equal(window_normals(seeds[:3], 100), draws[:3, :100])  # prefix-stable
    assert not np.array_equal(draws[0], draws[1])


# --- detector ---------------------------------------------------------------------------------


def test_fit_report(fitted: FCVAEDetector) -> None:
    report = fitted.fit_report_
    assert isinstance(report, FitReport)
    p = fitted.params
    assert 1 <= report.best_epoch <= report.epochs_run <= p.epochs
    for key in ("train_loss", "train_nll", "train_kl", "val_loss", "val_nll", "val_kl", "lr"):
        assert len(report.history[key]) == report.epochs_run
    assert report.history["kl_weight"][0] == 0.0
    assert math.isfinite(report.best_val_loss)
    assert report.best_val_loss == pytest.approx(report.history["val_loss"][report.best_epoch - 1])
    assert report.seconds > 0 and report.n_train_windows > 500
    json.dumps(report.to_dict())


def test_score_validates_windows(fitted: FCVAEDetector) -> None:
    seeds = np.zeros(2, dtype=np.int64)
    with pytest.raises(ContractError):
        fitted.score(np.ones((2, W + 1)), seeds)
    with pytest.raises(ContractError):
        fitted.score(np.ones((2, W)), np.zeros(3, dtype=np.int64))
    with pytest.raises(ContractError):
        fitted.score(np.ones((2, W)), np.zeros(2))  # float seeds
    last_missing = np.ones((2, W))
    last_missing[1, -1] = np.nan
    with pytest.raises(ContractError, match="window 1"):
        fitted.score(last_missing, seeds)
    with pytest.raises(ContractError):
        validate_windows(np.full((1, W), np.inf), seeds[:1], W)


def test_scores_with_missing_hours_and_empty_input(
    fitted: FCVAEDetector, series: np.ndarray
) -> None:
    ends = np.arange(110, 130)  # these windows contain the missing hours 100 and 101
    wins = windows_ending_at(series, ends)
    assert np.isnan(wins).any()
    details = fitted.score_details(wins, ends.astype(np.int64))
    for arr in (details.score, details.expected, details.expected_std):
        assert arr.shape == (20,) and arr.dtype == np.float64 and np.isfinite(arr).all()
    assert (details.expected_low <= details.expected).all()
    assert (details.expected <= details.expected_high).all()
    empty = fitted.score_details(np.empty((0, W)), np.empty(0, dtype=np.int64))
    assert empty.score.shape == (0,)


def test_injected_spike_beats_the_99th_percentile(
    fitted: FCVAEDetector, series: np.ndarray
) -> None:
    ends = np.arange(TRAIN_HOURS, series.size)
    scores = fitted.score(windows_ending_at(series, ends), ends.astype(np.int64))
    assert_every_spike_beats_clean_windows(scores, ends)


def test_log_transform_gives_an_asymmetric_non_negative_band(series: np.ndarray) -> None:
    params = FCVAEDetector.tiny_params().model_copy(update={"log_transform": True, "epochs": 4})
    detector = FCVAEDetector(params)
    detector.fit(series[: 24 * 20], seed=0, progress=False)
    ends = np.arange(W, 24 * 20)
    ends = ends[~np.isnan(series[ends])]
    d = detector.score_details(windows_ending_at(series, ends), ends)
    assert np.isfinite(d.score).all() and (d.expected_low >= 0).all()
    assert (d.expected_low <= d.expected).all() and (d.expected <= d.expected_high).all()
    assert not np.allclose(d.expected - d.expected_low, d.expected_high - d.expected)


# --- artifacts --------------------------------------------------------------------------------


def test_save_load_gives_identical_scores(
    fitted: FCVAEDetector, series: np.ndarray, tmp_path: Path
) -> None:
    ends = np.arange(TRAIN_HOURS, TRAIN_HOURS + 200)
    wins, seeds = windows_ending_at(series, ends), ends.astype(np.int64)
    directory = tmp_path / "fcvae" / "combo"
    fitted.save(directory, extra_meta={"threshold": 3.5, "training_span": ["a", "b"]})
    assert sorted(p.name for p in directory.iterdir()) == [META_FILE, WEIGHTS_FILE]
    loaded = FCVAEDetector.load(directory)
    before, after = fitted.score_details(wins, seeds), loaded.score_details(wins, seeds)
    for name in ("score", "expected", "expected_std", "expected_low", "expected_high"):
        assert np.array_equal(getattr(before, name), getattr(after, name)), name
    meta = loaded.meta
    assert meta["detector"] == "fcvae" and meta["schema_version"] == SCHEMA_VERSION
    assert meta["threshold"] == 3.5 and meta["training_span"] == ["a", "b"]
    assert meta["params"] == fitted.params.model_dump(mode="json")
    assert set(meta["versions"]) == {"torch", "numpy", "python"}
    assert meta["seed"] == 7 and meta["fit"]["epochs_run"] >= 1
    assert loaded.params == fitted.params
    text = (directory / META_FILE).read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    # re-saving a loaded model keeps the caller's keys; extra_meta may not clobber ours
    loaded.save(tmp_path / "again", extra_meta={"threshold": 4.0})
    again = json.loads((tmp_path / "again" / META_FILE).read_text())
    assert again["threshold"] == 4.0 and again["training_span"] == ["a", "b"]
    assert again["fit"] == meta["fit"]
    with pytest.raises(ArtifactError, match="params"):
        fitted.save(tmp_path / "bad", extra_meta={"params": {}})


def test_weights_file_holds_state_dicts_only(fitted: FCVAEDetector, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    weights = torch.load(tmp_path / "m" / WEIGHTS_FILE, weights_only=True)
    assert set(weights) == {"gfm", "lfm", "encoder", "decoder"}
    assert all(isinstance(t, torch.Tensor) for sd in weights.values() for t in sd.values())


def test_save_replaces_an_existing_artifact_atomically(
    fitted: FCVAEDetector, tmp_path: Path
) -> None:
    directory = tmp_path / "m"
    fitted.save(directory, extra_meta={"version": 1})
    fitted.save(directory, extra_meta={"version": 2})
    assert json.loads((directory / META_FILE).read_text())["version"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dirs left behind


def test_read_artifact_warns_on_another_torch_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_artifact(tmp_path / "a", {"detector": "demo"}, {"net": {"w": torch.ones(2)}})
    meta_path = tmp_path / "a" / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["versions"]["torch"] = "0.0.1"
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="app.detectors.base"):
        meta, weights = read_artifact(tmp_path / "a", "demo")
    assert "0.0.1" in caplog.text
    assert torch.equal(weights["net"]["w"], torch.ones(2))


def test_write_artifact_rejects_unserialisable_meta(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="JSON"):
        write_artifact(tmp_path / "a", {"detector": "demo", "x": object()}, {})
    with pytest.raises(ArtifactError, match="detector"):
        write_artifact(tmp_path / "b", {}, {})
    assert list(tmp_path.iterdir()) == []
    write_artifact(tmp_path / "c", {"detector": "demo", "nan": float("nan")}, {})
    assert json.loads((tmp_path / "c" / META_FILE).read_text())["nan"] is None
