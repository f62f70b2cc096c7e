"""VAE+GAN: network, losses, score components and their combination, artifacts, end to end.

Everything runs on the CPU with ``VAEGANDetector.tiny_params()``; the trained model is shared
by the module (one fit of a few seconds).  What FCVAE and VAE+GAN must both do is checked
once for both in ``tests/contract/test_detector_contract.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from app.detectors.base import META_FILE, SCORE_CHUNK, WEIGHTS_FILE
from app.detectors.vaegan import VAEGANDetector, VAEGANParams
from app.detectors.vaegan.detector import combine_components
from app.detectors.vaegan.loss import (
    critic_loss,
    gaussian_kl,
    generator_loss,
    masked_mse,
    vae_objective,
)
from app.detectors.vaegan.network import VAEGANNetwork, hide_last, masked_input
from app.detectors.windows import robust_stats, robust_z
from app.errors import ArtifactError, ContractError, DataError, NotFittedError
from tests.unit.detector_helpers import (
    SPIKE_HOURS,
    TRAIN_HOURS,
    VAL_HOURS,
    W,
    assert_every_spike_beats_clean_windows,
    fit_tiny,
    spiky_series,
    windows_ending_at,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DETAIL_FIELDS = ("score", "expected", "expected_std", "expected_low", "expected_high")


def tiny_network() -> VAEGANNetwork:
    p = VAEGANDetector.tiny_params()
    torch.manual_seed(0)
    return VAEGANNetwork(
        window=p.window,
        latent_dim=p.latent_dim,
        hidden_dim=p.hidden_dim,
        critic_hidden_dim=p.critic_hidden_dim,
    ).eval()


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    return spiky_series()


@pytest.fixture(scope="module")
def fitted(series: np.ndarray) -> VAEGANDetector:
    return fit_tiny(VAEGANDetector, series)


def test_default_params_follow_the_brief() -> None:
    p = VAEGANParams()
    assert (p.window, p.latent_dim, p.n_samples) == (24, 8, 16)
    assert p.combination == "weighted_robust_z" and 0.0 < p.critic_weight < 1.0
    with pytest.raises(ValueError):
        VAEGANParams(critic_weight=1.5)
    with pytest.raises(ValueError):
        VAEGANParams(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="critic_mutation_min_sigma"):
        VAEGANParams(critic_mutation_min_sigma=3.0, critic_mutation_max_sigma=2.0)


# --- network ----------------------------------------------------------------------------------


def test_network_shapes() -> None:
    net = tiny_network()
    x, ok = torch.randn(5, W), torch.ones(5, W, dtype=torch.bool)
    out = net.reconstruct(x, ok, torch.randn(5, 8))
    assert out["x_hat"].shape == (5, W)
    assert out["mu_z"].shape == out["logvar_z"].shape == out["z"].shape == (5, 8)
    assert net.decoder(torch.randn(7, 8)).shape == (7, W)
    assert net.critic(x, ok).shape == (5,)
    assert net.last_point_samples(x, ok, torch.randn(5, 3, 8)).shape == (5, 3)
    assert set(net.state_dicts()) == {"encoder", "decoder", "critic"}


def test_decoder_last_point_matches_the_full_decode() -> None:
    net = tiny_network()
    z = torch.randn(4, 3, 8)
    with torch.no_grad():
        # Same values up to float32 rounding: a one-row product sums in another order than
        # the full one (4.5e-8 apart on an AVX-512 CPU, for outputs up to 0.36).
        torch.testing.assert_close(
            net.decoder.last_point(z)[..., 0], net.decoder(z)[..., -1], rtol=1e-5, atol=1e-6
        )


def test_last_value_does_not_influence_the_reconstruction() -> None:
    net = tiny_network()
    x, ok = torch.randn(6, W), torch.ones(6, W, dtype=torch.bool)
    eps = torch.randn(6, 4, 8)
    with torch.no_grad():
        base = net.last_point_samples(x, ok, eps)
        for value in (-50.0, 0.0, 3.0, 1e6, math.nan):
            moved = x.clone()
            moved[:, -1] = value
            assert torch.equal(net.last_point_samples(moved, ok, eps), base), value
        # the critic, by contrast, does see the last value
        moved = x.clone()
        moved[:, -1] += 5.0
        assert not torch.equal(net.critic(moved, ok), net.critic(x, ok))


def test_masked_input_hides_values_and_carries_the_mask() -> None:
    x = torch.tensor([[1.0, math.nan, math.inf]])
    ok = torch.tensor([[True, False, False]])
    assert masked_input(x, ok).tolist() == [[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]]
    assert hide_last(ok).tolist() == [[True, False, False]] and ok[0, 0]


def test_critic_is_spectrally_normalised() -> None:
    net = tiny_network()
    for layer in (net.critic.inp, net.critic.hidden, net.critic.out):
        assert torch.nn.utils.parametrize.is_parametrized(layer, "weight")


# --- losses -----------------------------------------------------------------------------------


def test_masked_loss_ignores_masked_points() -> None:
    torch.manual_seed(0)
    x, x_hat = torch.randn(4, W), torch.randn(4, W, requires_grad=True)
    ok = torch.rand(4, W) > 0.3
    loss = masked_mse(x, x_hat, ok)
    expected = ((x - x_hat) ** 2)[ok].mean()
    assert torch.allclose(loss, expected)
    garbage = torch.where(ok, x, torch.full_like(x, math.nan))
    garbage[~ok & (torch.arange(W) % 2 == 0)] = math.inf
    assert torch.equal(masked_mse(garbage, x_hat, ok), loss)
    loss.backward()
    assert x_hat.grad is not None and torch.all(x_hat.grad[~ok] == 0)
    assert float(masked_mse(x, x_hat.detach(), torch.zeros_like(ok))) == 0.0


def test_kl_and_gan_loss_closed_forms() -> None:
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # ½(1 + 1 − 0 − 1) + ½(0 + 2 − log 2 − 1)
    assert math.isclose(float(gaussian_kl(mu, logvar)), 0.5 + 0.5 * (1 - math.log(2)), rel_tol=1e-6)
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-0.5, 1.0])
    assert math.isclose(float(critic_loss(real, fake, "hinge")), 0.25 + 1.25)
    assert math.isclose(
        float(critic_loss(real, fake, "bce")),
        float(
            torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean()
        ),
    )
    assert math.isclose(float(generator_loss(fake, "hinge")), -0.25)
    assert float(generator_loss(torch.tensor([50.0]), "bce")) < 1e-6
    with pytest.raises(ValueError, match="unknown GAN loss"):
        critic_loss(real, fake, "wgan")  # type: ignore[arg-type]


def test_vae_objective_weights_its_terms() -> None:
    torch.manual_seed(1)
    x, x_hat = torch.randn(3, W), torch.randn(3, W)
    ok = torch.ones(3, W, dtype=torch.bool)
    mu, logvar, logits = torch.randn(3, 8), torch.randn(3, 8), torch.randn(6)
    t = vae_objective(
        x, x_hat, ok, mu, logvar, logits, kl_weight=0.1, adv_weight=0.02, kind="hinge"
    )
    assert set(t) == {"loss", "recon", "kl", "adv"}
    assert torch.allclose(t["loss"], t["recon"] + 0.1 * t["kl"] + 0.02 * t["adv"])


# --- combination helpers ------------------------------------------------------------------------


def test_robust_stats_and_combination() -> None:
    stats = robust_stats(np.array([1.0, 2.0, 3.0, 4.0, 1000.0, np.nan]))
    assert stats == {"median": 3.0, "scale": 1.4826}
    assert robust_stats(np.full(5, 2.0)) == {"median": 2.0, "scale": 1.0}  # never a 0 scale
    z = robust_z(np.array([3.0, 4.4826]), stats)
    assert np.allclose(z, [0.0, 1.0])
    assert combine_components(np.array([1.0]), np.array([3.0]), 0.0).tolist() == [1.0]
    assert combine_components(np.array([1.0]), np.array([3.0]), 1.0).tolist() == [3.0]
    with pytest.raises(ValueError, match="critic_weight"):
        combine_components(np.array([1.0]), np.array([3.0]), 1.5)


# --- detector -----------------------------------------------------------------------------------


def test_not_fitted_errors(tmp_path: Path) -> None:
    fresh = VAEGANDetector(VAEGANDetector.tiny_params())
    assert not fresh.is_fitted and fresh.window == W and fresh.name == "vaegan"
    wins = np.ones((2, W))
    for call in (
        lambda: fresh.score(wins, np.arange(2)),
        lambda: fresh.component_scores(wins, np.arange(2)),
        lambda: fresh.calibrate_components(wins, np.arange(2)),
        lambda: fresh.save(tmp_path / "m"),
    ):
        with pytest.raises(NotFittedError):
            call()


def test_fit_report_logs_every_term_finitely(fitted: VAEGANDetector) -> None:
    report = fitted.fit_report_
    assert report is not None and 1 <= report.best_epoch <= report.epochs_run
    for split in ("train", "val"):
        for term in ("loss", "recon", "kl", "adv", "critic"):
            values = report.history[f"{split}_{term}"]
            assert len(values) == report.epochs_run and np.isfinite(values).all(), (split, term)
    assert report.best_val_loss == report.history["val_recon"][report.best_epoch - 1]
    assert report.history["train_recon"][-1] < report.history["train_recon"][0]
    assert fitted.meta["combination"]["source"] == "val"


@pytest.mark.parametrize("gan_loss", ["hinge", "bce"])
def test_gan_losses_stay_finite_over_a_short_training(series: np.ndarray, gan_loss: str) -> None:
    params = VAEGANDetector.tiny_params().model_copy(
        update={"epochs": 4, "gan_loss": gan_loss, "adv_weight": 0.5, "critic_lr": 1e-2}
    )
    train = series[: 24 * 15].copy()
    train[::13] = np.nan  # plenty of missing points
    detector = VAEGANDetector(params)
    report = detector.fit(train, seed=2, progress=False)
    for term in ("loss", "recon", "kl", "adv", "critic"):
        assert np.isfinite(report.history[f"train_{term}"]).all(), term
    assert detector.meta["combination"]["source"] == "train"  # no val: training windows


def test_score_validates_windows(fitted: VAEGANDetector) -> None:
    good = np.full((2, W), 900.0)
    with pytest.raises(ContractError, match="shape"):
        fitted.score(good[:, :-1], np.arange(2))
    with pytest.raises(ContractError, match="missing last point"):
        fitted.score(np.c_[good[:, :-1], [np.nan, 1.0]], np.arange(2))
    with pytest.raises(ContractError, match="negative"):  # log_transform is on by default
        fitted.score(np.c_[good[:, :-1], [-5.0, 1.0]], np.arange(2))
    assert fitted.score(good[:0], np.arange(0)).shape == (0,)


def test_score_is_the_weighted_sum_of_robust_z_components(
    fitted: VAEGANDetector, series: np.ndarray
) -> None:
    ends = np.arange(TRAIN_HOURS, TRAIN_HOURS + 200)
    wins, seeds = windows_ending_at(series, ends), ends.astype(np.int64)
    comp = fitted.component_scores(wins, seeds)
    assert set(comp) == {"recon", "critic"}
    assert all(a.shape == (200,) and a.dtype == np.float64 for a in comp.values())
    stats = fitted.component_stats_
    assert stats is not None
    expected = combine_components(
        robust_z(comp["recon"], stats["recon"]),
        robust_z(comp["critic"], stats["critic"]),
        fitted.params.critic_weight,
    )
    assert np.array_equal(fitted.score(wins, seeds), expected)
    combination = fitted.meta["combination"]
    assert combination["mode"] == "weighted_robust_z"
    assert combination["critic_weight"] == fitted.params.critic_weight
    assert combination["components"] == stats


def test_critic_modes(fitted: VAEGANDetector, series: np.ndarray, tmp_path: Path) -> None:
    ends = np.arange(TRAIN_HOURS, TRAIN_HOURS + 40)
    wins, seeds = windows_ending_at(series, ends), ends.astype(np.int64)
    fitted.save(tmp_path / "m")
    plain = VAEGANDetector.load(tmp_path / "m")
    plain.params = plain.params.model_copy(update={"critic_mode": "window"})
    x = torch.from_numpy(plain._normalise(wins, "w").astype(np.float32))
    ok = ~torch.isnan(x)
    with torch.no_grad():
        logits = plain.network.critic(torch.nan_to_num(x), ok).numpy()
    assert np.allclose(plain.component_scores(wins, seeds)["critic"], -logits, atol=1e-6)
    contrast = fitted.component_scores(wins, seeds)
    assert np.array_equal(contrast["recon"], plain.component_scores(wins, seeds)["recon"])


def test_expected_ignores_the_last_value(fitted: VAEGANDetector, series: np.ndarray) -> None:
    ends = np.arange(TRAIN_HOURS - 100, TRAIN_HOURS - 50)
    wins, seeds = windows_ending_at(series, ends), ends.astype(np.int64)
    moved = wins.copy()
    moved[:, -1] *= 3.0
    a, b = fitted.score_details(wins, seeds), fitted.score_details(moved, seeds)
    assert np.array_equal(a.expected, b.expected)
    assert np.array_equal(a.expected_std, b.expected_std)
    assert (b.score > a.score).mean() > 0.9  # tripled counts look anomalous


def test_calibrate_components_skips_missing_last_points(
    fitted: VAEGANDetector, series: np.ndarray
) -> None:
    detector = VAEGANDetector(fitted.params)
    detector._net, detector.mean_, detector.std_ = fitted.network, fitted.mean_, fitted.std_
    ends = np.arange(TRAIN_HOURS - VAL_HOURS, TRAIN_HOURS)
    wins = windows_ending_at(series, ends)
    wins[::5, -1] = np.nan
    block = detector.calibrate_components(wins, ends.astype(np.int64), source="test")
    assert block["n_windows"] == int((~np.isnan(wins[:, -1])).sum())
    assert block["source"] == "test" and detector.residual_scale_ is not None
    assert all(block["components"][c]["scale"] > 0 for c in ("recon", "critic"))
    with pytest.raises(DataError, match="last point"):
        detector.calibrate_components(np.full((3, W), np.nan), np.arange(3))


def test_choose_critic_weight(fitted: VAEGANDetector, series: np.ndarray, tmp_path: Path) -> None:
    ends = np.arange(TRAIN_HOURS, series.size)
    ends = ends[~np.isnan(series[ends])]
    wins, seeds = windows_ending_at(series, ends), ends.astype(np.int64)
    labels = np.isin(ends, SPIKE_HOURS)
    before = fitted.params.critic_weight
    result = fitted.choose_critic_weight(wins, seeds, labels, grid=(0.0, 0.5, 1.0), apply=False)
    assert result["critic_weight"] in (0.0, 0.5, 1.0) and set(result["auprc"]) == {
        "0.0",
        "0.5",
        "1.0",
    }
    assert fitted.params.critic_weight == before
    with pytest.raises(DataError, match="both labels"):
        fitted.choose_critic_weight(wins, seeds, np.zeros(len(ends), bool))
    fitted.save(tmp_path / "m")
    copy = VAEGANDetector.load(tmp_path / "m")
    best = max(result["auprc"].items(), key=lambda kv: (kv[1], -float(kv[0])))[0]
    assert result["critic_weight"] == float(best)
    copy.choose_critic_weight(wins, seeds, labels, grid=(0.0, 0.5, 1.0))
    assert copy.params.critic_weight == result["critic_weight"]
    assert copy.meta["combination"]["critic_weight"] == result["critic_weight"]
    assert copy.meta["params"]["critic_weight"] == result["critic_weight"]


def test_components_do_not_depend_on_the_batch(fitted: VAEGANDetector, series: np.ndarray) -> None:
    # The contract suite checks score_details the same way; these are the raw components.
    rng = np.random.default_rng(0)
    ends = rng.integers(W, series.size, 1000)
    ends = ends[~np.isnan(series[ends])]
    wins = windows_ending_at(series, ends)
    seeds = rng.integers(-(2**63), 2**63 - 1, ends.size, dtype=np.int64)
    comps = fitted.component_scores(wins, seeds)
    assert ends.size > SCORE_CHUNK  # spans a chunk boundary
    for i in (0, 1, 17, SCORE_CHUNK - 1, SCORE_CHUNK, ends.size - 1):
        alone_c = fitted.component_scores(wins[i : i + 1], seeds[i : i + 1])
        for name in ("recon", "critic"):
            assert np.array_equal(alone_c[name], comps[name][i : i + 1]), (i, name)


def test_injected_spike_is_caught(fitted: VAEGANDetector, series: np.ndarray) -> None:
    ends = np.arange(TRAIN_HOURS, series.size)
    ends = ends[~np.isnan(series[ends])]
    scores = fitted.score(windows_ending_at(series, ends), ends.astype(np.int64))
    assert_every_spike_beats_clean_windows(scores, ends)


# --- artifacts ----------------------------------------------------------------------------------


def test_save_load_gives_identical_scores(
    fitted: VAEGANDetector, series: np.ndarray, tmp_path: Path
) -> None:
    directory = tmp_path / "vaegan" / "combo"
    fitted.save(directory, extra_meta={"decision": {"threshold_calibrated": 2.0}})
    loaded = VAEGANDetector.load(directory)
    assert loaded.meta["decision"] == {"threshold_calibrated": 2.0}
    assert loaded.params == fitted.params and loaded.component_stats_ == fitted.component_stats_
    assert loaded.meta["combination"]["critic_weight"] == fitted.params.critic_weight
    ends = np.arange(TRAIN_HOURS, TRAIN_HOURS + 300)
    ends = ends[~np.isnan(series[ends])]
    wins, seeds = windows_ending_at(series, ends), ends.astype(np.int64)
    before, after = fitted.score_details(wins, seeds), loaded.score_details(wins, seeds)
    for name in DETAIL_FIELDS:
        assert np.array_equal(getattr(before, name), getattr(after, name)), name
    weights = torch.load(directory / WEIGHTS_FILE, weights_only=True)
    assert set(weights) == {"encoder", "decoder", "critic"}
    # a loaded detector re-saves with its training record and the caller's keys kept
    loaded.save(tmp_path / "again")
    again = json.loads((tmp_path / "again" / META_FILE).read_text())
    assert again["fit"] == loaded.meta["fit"] and again["decision"] == loaded.meta["decision"]
    with pytest.raises(ArtifactError, match="may not override"):
        fitted.save(tmp_path / "x", extra_meta={"combination": {}})


def test_load_refuses_invalid_component_statistics(fitted: VAEGANDetector, tmp_path: Path) -> None:
    # The contract suite checks the other broken artifacts; these statistics are VAE+GAN's.
    fitted.save(tmp_path / "m")
    meta_path = tmp_path / "m" / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["combination"] = {"components": None}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="component statistics"):
        VAEGANDetector.load(tmp_path / "m")
