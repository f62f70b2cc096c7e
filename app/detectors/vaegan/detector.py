"""VAE+GAN detector: a VAE whose decoder is also a GAN generator, plus a window critic.

Score direction: ``score`` is a weighted sum of two robust z-scores (reconstruction error of
the last point and the critic's "not real" verdict on the window); **higher = more
anomalous**.

Units and normalisation
-----------------------
As in FCVAE: raw counts are ``log1p``-transformed (``VAEGANParams.log_transform``, **on** by
default here: with a fixed-variance decoder, log units make the error of a quiet night hour
and of a busy peak hour comparable; on the synthetic data it lifted the reconstruction
component's validation ROC-AUC from ≈0.75 to ≈0.87) and standardised with the mean and
standard deviation of the **training series only**. Missing hours (NaN) become 0 and are
masked: the encoder and the critic see the mask as an input, and masked points never enter
the reconstruction loss.

Training (DESIGN §6)
--------------------
Per batch: ≈1% of the points are masked as missing (augmentation); the critic takes one step
on real windows vs decoded windows (reconstructions and prior samples ``G(z), z ~ N(0, I)``,
both carrying the real batch's mask so the mask tells the critic nothing) plus, with
``critic_mutation_rate > 0``, copies of real windows whose last point is shifted by
``±U(min, max)`` σ (``app.detectors.augment.value_mutation``, used here as extra *fakes*:
without them the critic only learns "decoded vs real", which on our data ranked anomalous
hours at chance or worse; with them its component reaches ROC-AUC ≈0.7–0.87 on validation);
then the VAE and generator take one step on ``recon + kl_weight·kl + adv_weight·adv`` (see
``loss``). Two Adam optimizers with cosine learning rates and gradient clipping; the shared
loop (``app.detectors.training``) runs the epochs, the linear KL annealing and early
stopping on the validation reconstruction loss. The encoder never sees a window's last point
(it is always held out), so the model learns to reconstruct the last hour from its context.

Scoring
-------
For each window, two raw components (normalised units):

``recon``
    The window is encoded with its **last point replaced by 0 and masked**, ``n_samples``
    latents ``z_s ~ q(z | context)`` are decoded, and ``recon = √((1/S) Σ_s (x_last − x̂_s)²)``
    with ``x_last`` the *original* last value (root-mean-square standardised error).
``critic``
    ``critic_mode="window"``: ``−D(x)``, the critic's logit on the **original** window, negated
    (higher = less real). ``critic_mode="contrast"`` (default): ``D(x̃) − D(x)`` where ``x̃``
    is the window with its last point replaced by the expected value, i.e. how much less real
    the observed last value makes the window than the expected one. The contrast cancels
    what the critic thinks of the context (an odd hour 20 hours ago would otherwise keep the
    verdict high for a whole window length); on validation it ranked anomalies clearly
    better than the plain verdict.

Each component is put on a comparable scale with a robust z-score,
``z = (raw − median) / (1.4826 · MAD)``, whose statistics come from **clean validation
windows** (``calibrate_components``; ``fit`` calls it on the validation series), and

    score = (1 − w) · z_recon + w · z_critic,     w = VAEGANParams.critic_weight

(``combination="weighted_robust_z"``; ``choose_critic_weight`` picks ``w`` on labelled
validation windows). ``expected`` is the mean of the ``x̂_s``, de-normalised; ``expected_std``
combines the spread of the draws with the residual scale measured on the same clean windows.

Batch independence and seeds
----------------------------
A window's latent draws come from the shared counter-based ``app.detectors.draws.window_normals``
(keyed by the window's seed XOR a VAE+GAN stream constant), never from a generator shared across
the batch. Windows are scored in fixed-size chunks of ``SCORE_CHUNK`` rows (the last chunk
padded) and every operation works row by row, so a window gets the same score bit for bit
alone or in any batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from app.artifacts import META_FILE
from app.detectors.augment import missing_injection, value_mutation
from app.detectors.base import (
    SCORE_CHUNK,
    TINY_SCHEDULE,
    NetworkDetector,
    ScoreDetails,
    is_finite_number,
    validate_windows,
)
from app.detectors.draws import window_normals
from app.detectors.training import WindowHooks, chunked_means, clipped_step, kl_weight_at
from app.detectors.vaegan.loss import critic_loss, vae_objective
from app.detectors.vaegan.network import VAEGANNetwork
from app.detectors.windows import robust_stats, robust_z, scorable_windows
from app.errors import ArtifactError, ContractError, DataError

log = logging.getLogger(__name__)

#: meta.json keys written by the detector itself; ``extra_meta`` may not override them.
RESERVED_META_KEYS = frozenset(
    {
        "detector",
        "params",
        "normalisation",
        "seed",
        "fit",
        "combination",
        "schema_version",
        "versions",
    }
)
LOSS_TERMS = ("loss", "recon", "kl", "adv", "critic")
COMPONENTS = ("recon", "critic")
#: XOR-ed into a window's seed so VAE+GAN draws differ from FCVAE draws for the same seed.
_STREAM = -0x5641_4547_414E_5F31  # an arbitrary signed 64-bit constant
#: Default grid for ``choose_critic_weight``.
CRITIC_WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class VAEGANParams(BaseModel):
    """VAE+GAN hyperparameters; written verbatim into ``meta.json``.

    The score combination is explicit: ``combination`` (the mode) and ``critic_weight``
    (``w`` in ``score = (1 − w)·z_recon + w·z_critic``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Default window: ``window`` steps whatever the step; shrunk to fit a short history,
    #: never below ``MIN_WINDOW_STEPS``.
    WINDOW_IS_A_WEEK: ClassVar[bool] = False
    MIN_WINDOW_STEPS: ClassVar[int] = 8

    # network
    window: int = Field(24, ge=4, description="window length W (hours); the last is scored")
    latent_dim: int = Field(8, ge=1)
    hidden_dim: int = Field(128, ge=1, description="width of the VAE's hidden layers")
    critic_hidden_dim: int = Field(128, ge=1, description="width of the critic's hidden layers")
    log_transform: bool = Field(True, description="log1p the counts before standardising")
    # training
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate of the VAE + generator")
    critic_lr: float = Field(2e-4, gt=0.0, description="Adam learning rate of the critic")
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(120, ge=1)
    kl_weight: float = Field(0.005, ge=0.0, description="weight of the KL (nats/window)")
    kl_warmup_epochs: int = Field(20, ge=0, description="KL weight rises 0 → kl_weight")
    adv_weight: float = Field(0.02, ge=0.0, description="weight of the generator's GAN term")
    gan_loss: Literal["hinge", "bce"] = Field("hinge", description="critic/generator loss")
    patience: int = Field(15, ge=1, description="early stopping, epochs after KL warm-up")
    grad_clip: float = Field(2.0, gt=0.0, description="max global gradient norm (both nets)")
    min_observed_share: float = Field(
        0.5, ge=0.0, le=1.0, description="training windows need this share of present hours"
    )
    missing_injection_rate: float = Field(0.01, ge=0.0, le=1.0)
    critic_mutation_rate: float = Field(
        0.5, ge=0.0, le=1.0, description="extra critic fakes: real windows, last point shifted"
    )
    critic_mutation_min_sigma: float = Field(0.5, ge=0.0)
    critic_mutation_max_sigma: float = Field(5.0, gt=0.0)
    # scoring
    n_samples: int = Field(16, ge=1, description="latent draws averaged in the score")
    band_sigmas: float = Field(3.0, gt=0.0, description="half-width of the expected band")
    critic_mode: Literal["window", "contrast"] = Field(
        "contrast", description="critic component: −D(x), or D(x with expected last) − D(x)"
    )
    combination: Literal["weighted_robust_z"] = Field(
        "weighted_robust_z", description="how the two components make the score"
    )
    critic_weight: float = Field(0.2, ge=0.0, le=1.0, description="w of the critic's z-score")

    @model_validator(mode="after")
    def _check(self) -> VAEGANParams:
        if self.critic_mutation_min_sigma > self.critic_mutation_max_sigma:
            raise ValueError(
                f"critic_mutation_min_sigma {self.critic_mutation_min_sigma} exceeds "
                f"critic_mutation_max_sigma {self.critic_mutation_max_sigma}"
            )
        return self


# --- pure numpy helpers -------------------------------------------------------------------------


def combine_components(
    z_recon: NDArray[np.float64], z_critic: NDArray[np.float64], critic_weight: float
) -> NDArray[np.float64]:
    """``(1 − w)·z_recon + w·z_critic``; higher = more anomalous.

    Examples
    --------
    >>> combine_components(np.array([2.0]), np.array([4.0]), 0.25).tolist()
    [2.5]
    """
    if not 0.0 <= critic_weight <= 1.0:
        raise ValueError(f"critic_weight must lie in [0, 1]; got {critic_weight}")
    return (1.0 - critic_weight) * z_recon + critic_weight * z_critic


# --- training -----------------------------------------------------------------------------------


class _VAEGANTraining(WindowHooks[VAEGANNetwork, VAEGANParams]):
    """VAE+GAN's step for the shared loop: a critic step, then a VAE + generator step."""

    VAL_NOISE: ClassVar[int] = 2  # eps, then the prior draws

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        p = self.p
        self.vae_params = list(self.net.vae_parameters())
        self.critic_params = list(self.net.critic.parameters())
        self.opt_vae = torch.optim.Adam(self.vae_params, lr=p.lr)
        self.opt_critic = torch.optim.Adam(self.critic_params, lr=p.critic_lr, betas=(0.5, 0.999))
        self.schedules = [
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.epochs, eta_min=lr / 100.0)
            for opt, lr in ((self.opt_vae, p.lr), (self.opt_critic, p.critic_lr))
        ]

    def kl_weight(self, epoch: int) -> float:
        return self.p.kl_weight * kl_weight_at(epoch, self.p.kl_warmup_epochs)

    def train_step(self, rows: Tensor, kl_weight: float) -> tuple[Mapping[str, Tensor], int]:
        p, net = self.p, self.net
        xb, okb = self.xt[rows], self.okt[rows]
        if p.missing_injection_rate > 0:
            xb, okb = missing_injection(xb, okb, p.missing_injection_rate, self.aug)
        eps = torch.randn(xb.shape[0], p.latent_dim, generator=self.noise).to(self.device)
        eps_prior = torch.randn(xb.shape[0], p.latent_dim, generator=self.noise).to(self.device)
        out = net.reconstruct(xb, okb, eps)
        fakes = torch.cat((out["x_hat"], net.decoder(eps_prior)))
        fake_ok = torch.cat((okb, okb))
        # 1) critic step: real windows vs decoded ones (no gradient into the VAE)
        d_fakes, d_fake_ok = fakes.detach(), fake_ok
        if p.critic_mutation_rate > 0:
            mx, mok = value_mutation(
                xb,
                okb,
                p.critic_mutation_rate,
                self.aug,
                min_shift=p.critic_mutation_min_sigma,
                max_shift=p.critic_mutation_max_sigma,
            )
            mok[:, -1] = True  # the shifted last value is shown to the critic
            d_fakes, d_fake_ok = torch.cat((d_fakes, mx)), torch.cat((d_fake_ok, mok))
        d_loss = critic_loss(net.critic(xb, okb), net.critic(d_fakes, d_fake_ok), p.gan_loss)
        clipped_step(self.opt_critic, d_loss, self.critic_params, p.grad_clip)
        # 2) VAE + generator step against the updated critic
        terms = vae_objective(
            xb,
            out["x_hat"],
            okb,
            out["mu_z"],
            out["logvar_z"],
            net.critic(fakes, fake_ok),
            kl_weight=kl_weight,
            adv_weight=p.adv_weight,
            kind=p.gan_loss,
        )
        clipped_step(self.opt_vae, terms["loss"], self.vae_params, p.grad_clip)
        return {**terms, "critic": d_loss}, xb.shape[0]

    def eval_terms(self, kl_weight: float) -> dict[str, float] | None:
        """Validation loss terms (no augmentation, the epoch's KL weight)."""
        if self.val is None:
            return None
        p, net = self.p, self.net
        x, ok, eps, prior = self.val

        def forward(sl: slice) -> dict[str, Tensor]:
            out = net.reconstruct(x[sl], ok[sl], eps[sl])
            fakes = torch.cat((out["x_hat"], net.decoder(prior[sl])))
            fake_logits = net.critic(fakes, torch.cat((ok[sl], ok[sl])))
            terms = vae_objective(
                x[sl],
                out["x_hat"],
                ok[sl],
                out["mu_z"],
                out["logvar_z"],
                fake_logits,
                kl_weight=kl_weight,
                adv_weight=p.adv_weight,
                kind=p.gan_loss,
            )
            terms["critic"] = critic_loss(net.critic(x[sl], ok[sl]), fake_logits, p.gan_loss)
            return terms

        return chunked_means(x.shape[0], LOSS_TERMS, forward)


# --- the detector -------------------------------------------------------------------------------


def _window_eps(seeds: NDArray[np.int64], n_samples: int, latent_dim: int) -> Tensor:
    """``(n, S, L)`` standard-normal draws; row ``i`` depends only on ``seeds[i]``."""
    keyed = np.bitwise_xor(np.asarray(seeds, dtype=np.int64), np.int64(_STREAM))
    draws = window_normals(keyed, n_samples * latent_dim)
    return torch.from_numpy(np.ascontiguousarray(draws, dtype=np.float32)).view(
        -1, n_samples, latent_dim
    )


class VAEGANDetector(NetworkDetector):
    """VAE whose decoder doubles as a GAN generator, with a spectrally normalised critic.

    Score direction: **higher = more anomalous** (robust z of the last point's reconstruction
    error and of the critic's "not real" verdict, weighted by ``params.critic_weight``).

    Constructed from ``params`` (``VAEGANParams()`` when None) and ``device``; besides the
    fitted attributes of ``NetworkDetector`` it has:

    Attributes
    ----------
    component_stats_
        ``{"recon": {"median", "scale"}, "critic": {...}}`` of the robust z-scores.
    residual_scale_
        Robust scale of ``x_last − expected`` on the calibration windows (normalised units).
    """

    name: ClassVar[str] = "vaegan"
    reserved_meta_keys: ClassVar[frozenset[str]] = RESERVED_META_KEYS
    hooks_class: ClassVar[type[_VAEGANTraining]] = _VAEGANTraining
    extra_seeds: ClassVar[int] = 1  # the calibration windows' seeds

    params_class: ClassVar[type[BaseModel]] = VAEGANParams
    network_class: ClassVar[type[VAEGANNetwork]] = VAEGANNetwork
    network_args: ClassVar[tuple[str, ...]] = (
        "window",
        "latent_dim",
        "hidden_dim",
        "critic_hidden_dim",
    )
    loop_plan: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {
            "terms": LOSS_TERMS,
            "monitor": "recon",
            "postfix": {"recon": "train_recon", "val": "val_recon", "critic": "train_critic"},
            "stop_on_divergence": True,
        }
    )
    params: VAEGANParams
    _net: VAEGANNetwork | None

    def __init__(self, params: VAEGANParams | None = None, device: str = "cpu") -> None:
        super().__init__(params, device)
        self.component_stats_: dict[str, dict[str, float]] | None = None
        self.residual_scale_: float | None = None
        self.calibration_info_: dict[str, Any] = {}

    @staticmethod
    def tiny_params() -> VAEGANParams:
        """A small, fast configuration for tests (trains in a few seconds on a CPU)."""
        return VAEGANParams(
            **TINY_SCHEDULE,
            hidden_dim=48,
            critic_hidden_dim=32,
            critic_lr=1e-3,
            n_samples=8,
        )

    # --- training -----------------------------------------------------------------------------

    def _model_series(
        self, train: NDArray[np.float64], val: NDArray[np.float64] | None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """The transformed series."""
        return self._transform(train, "train"), None if val is None else self._transform(val, "val")

    def _after_fit(
        self, train: NDArray[np.float64], val: NDArray[np.float64] | None, seeds: tuple[int, ...]
    ) -> None:
        """Calibrate the components on ``val``'s windows (the training windows without it),
        their seeds counting up from the fit's extra seed."""
        (calib_seed,) = seeds
        source = "val" if val is not None else "train"
        calib_series = val if val is not None else train
        if source == "train":
            log.warning("vaegan fit without val: calibrating the components on training windows")
        windows = self._calibration_windows(calib_series)
        window_seeds = calib_seed % (1 << 31) + np.arange(windows.shape[0], dtype=np.int64)
        self.calibrate_components(windows, window_seeds, source=source)

    def _calibration_windows(self, series: NDArray[np.float64]) -> NDArray[np.float64]:
        """Raw windows of ``series`` with the last hour present and enough present hours."""
        return scorable_windows(series, self.params.window, self.params.min_observed_share)

    # --- scoring ------------------------------------------------------------------------------

    def _prepare(
        self, windows: NDArray[np.float64], seeds: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.int64]]:
        """Validate, normalise, fill missing with 0: ``(x, observed, seeds)``."""
        arr, seed_arr = validate_windows(windows, seeds, self.params.window)
        try:
            units = self._normalise(arr, "windows")
        except DataError as exc:
            raise ContractError(str(exc)) from exc
        observed = ~np.isnan(units)
        x = np.where(observed, units, 0.0).astype(np.float32)
        return x, observed, seed_arr

    def _raw(
        self, windows: NDArray[np.float64], seeds: NDArray[np.int64]
    ) -> dict[str, NDArray[np.float64]]:
        """Raw components and the reconstruction statistics, all in normalised units.

        Returns ``recon``, ``critic``, ``last`` (the normalised last value), ``centre`` (mean
        reconstruction of the last point) and ``spread`` (std of the draws), each ``(n,)``.
        """
        net = self.network
        p = self.params
        x, observed, seed_arr = self._prepare(windows, seeds)
        n = x.shape[0]
        recon_draws = np.empty((n, p.n_samples), dtype=np.float64)
        critic = np.empty(n, dtype=np.float64)
        net.eval()
        with torch.inference_mode():
            for start in range(0, n, SCORE_CHUNK):
                stop = min(n, start + SCORE_CHUNK)
                rows = stop - start
                x_chunk = np.zeros((SCORE_CHUNK, p.window), dtype=np.float32)
                x_chunk[:rows] = x[start:stop]
                ok_chunk = np.ones((SCORE_CHUNK, p.window), dtype=np.bool_)
                ok_chunk[:rows] = observed[start:stop]
                s_chunk = np.zeros(SCORE_CHUNK, dtype=np.int64)
                s_chunk[:rows] = seed_arr[start:stop]
                xt = torch.from_numpy(x_chunk).to(self.device)
                okt = torch.from_numpy(ok_chunk).to(self.device)
                eps = _window_eps(s_chunk, p.n_samples, p.latent_dim).to(self.device)
                draws = net.last_point_samples(xt, okt, eps)  # (C, S)
                logit = net.critic(xt, okt)
                if p.critic_mode == "contrast":
                    ref = torch.cat((xt[:, :-1], draws.mean(dim=1, keepdim=True)), dim=1)
                    ref_ok = torch.cat((okt[:, :-1], torch.ones_like(okt[:, -1:])), dim=1)
                    verdict = net.critic(ref, ref_ok) - logit
                else:
                    verdict = -logit
                recon_draws[start:stop] = draws[:rows].cpu().numpy()
                critic[start:stop] = verdict[:rows].cpu().numpy()
        last = x[:, -1].astype(np.float64)
        centre = recon_draws.mean(axis=1)
        return {
            "recon": np.sqrt(((last[:, None] - recon_draws) ** 2).mean(axis=1)),
            "critic": critic,
            "last": last,
            "centre": centre,
            "spread": recon_draws.std(axis=1),
        }

    def component_scores(
        self, windows: NDArray[np.float64], seeds: NDArray[np.int64]
    ) -> dict[str, NDArray[np.float64]]:
        """The two raw components of each window's score (higher = more anomalous each).

        Returns
        -------
        dict
            ``recon`` (RMS standardised error of the last point over the latent draws) and
            ``critic`` (``−D(x)`` or ``D(x̃) − D(x)``, see ``params.critic_mode``), float64
            ``(n,)`` arrays, before the robust z-scores.
        """
        raw = self._raw(windows, seeds)
        return {name: raw[name] for name in COMPONENTS}

    def calibrate_components(
        self,
        val_windows: NDArray[np.float64],
        val_seeds: NDArray[np.int64],
        *,
        source: str = "given",
    ) -> dict[str, Any]:
        """Set the robust z statistics of both components (and the residual scale).

        Parameters
        ----------
        val_windows
            ``(n, W)`` raw **clean** validation windows (labelled hours already NaN); windows
            whose last point is NaN are skipped.
        val_seeds
            ``(n,)`` int64 seeds, one per window.
        source
            Where the windows came from, recorded in meta (``"val"``, ``"train"``…).

        Returns
        -------
        dict
            The ``combination`` block of ``meta.json``.

        Raises
        ------
        DataError
            No window has a present last point.
        """
        arr = np.asarray(val_windows, dtype=np.float64)
        seed_arr = np.asarray(val_seeds)
        if arr.ndim != 2 or seed_arr.shape != (arr.shape[0],):
            raise ContractError(
                f"need (n, W) windows and (n,) seeds; got {arr.shape} and {seed_arr.shape}"
            )
        keep = ~np.isnan(arr[:, -1])
        if not keep.any():
            raise DataError(f"none of the {arr.shape[0]} calibration windows has a last point")
        raw = self._raw(arr[keep], seed_arr[keep])
        self.component_stats_ = {name: robust_stats(raw[name]) for name in COMPONENTS}
        self.residual_scale_ = robust_stats(raw["last"] - raw["centre"])["scale"]
        self.calibration_info_ = {"source": source, "n_windows": int(keep.sum())}
        self.meta = {**self.meta, "combination": self._combination_meta()}
        log.info(
            "vaegan components calibrated on %d %s windows: recon %s, critic %s, "
            "residual_scale=%.4f",
            int(keep.sum()),
            source,
            self.component_stats_["recon"],
            self.component_stats_["critic"],
            self.residual_scale_,
        )
        combination: dict[str, Any] = self.meta["combination"]
        return combination

    def choose_critic_weight(
        self,
        val_windows: NDArray[np.float64],
        val_seeds: NDArray[np.int64],
        labels: NDArray[np.bool_],
        *,
        grid: tuple[float, ...] = CRITIC_WEIGHT_GRID,
        apply: bool = True,
    ) -> dict[str, Any]:
        """Pick ``critic_weight`` from ``grid`` by AUPRC on labelled validation windows.

        Windows whose last point is NaN are skipped. Ties go to the smaller weight. With
        ``apply`` the detector's ``params.critic_weight`` (and meta) take the chosen value.

        Returns
        -------
        dict
            ``critic_weight`` (chosen) and ``auprc`` (``{str(w): AUPRC}`` over the grid).

        Raises
        ------
        DataError
            The kept windows do not hold both labels.
        """
        from sklearn.metrics import average_precision_score

        arr = np.asarray(val_windows, dtype=np.float64)
        y = np.asarray(labels, dtype=bool)
        if y.shape != (arr.shape[0],):
            raise ContractError(f"labels must have shape ({arr.shape[0]},); got {y.shape}")
        keep = ~np.isnan(arr[:, -1])
        y = y[keep]
        if y.all() or not y.any():
            raise DataError(f"need both labels among {int(keep.sum())} windows; got {y.sum()} true")
        z = self._z_components(self._raw(arr[keep], np.asarray(val_seeds)[keep]))
        auprc = {
            float(w): float(
                average_precision_score(y, combine_components(z["recon"], z["critic"], w))
            )
            for w in grid
        }
        best = max(auprc, key=lambda w: (auprc[w], -w))
        if apply:
            self.params = self.params.model_copy(update={"critic_weight": best})
            self.meta = {
                **self.meta,
                "params": self.params.model_dump(mode="json"),
                "combination": self._combination_meta(),
            }
        log.info("vaegan critic_weight=%.2f chosen by AUPRC %s", best, auprc)
        return {"critic_weight": best, "auprc": {str(w): v for w, v in auprc.items()}}

    def _z_components(self, raw: dict[str, NDArray[np.float64]]) -> dict[str, NDArray[np.float64]]:
        stats = self.component_stats_ or {
            name: {"median": 0.0, "scale": 1.0} for name in COMPONENTS
        }
        return {name: robust_z(raw[name], stats[name]) for name in COMPONENTS}

    def score_details(self, windows: NDArray[np.float64], seeds: NDArray[np.int64]) -> ScoreDetails:
        """``Detector.score_details``: ``score`` = ``(1 − w)·z_recon + w·z_critic``;
        ``expected`` is the mean reconstruction of the last point, ``expected_std``
        ``√(spread² + residual_scale²)`` and the band ``± band_sigmas·expected_std`` (never
        below 0), all in counts."""
        raw = self._raw(windows, seeds)
        if raw["last"].shape[0] == 0:
            empty = np.empty(0, dtype=np.float64)
            return ScoreDetails(empty, empty.copy(), empty.copy(), empty.copy(), empty.copy())
        z = self._z_components(raw)
        score = combine_components(z["recon"], z["critic"], self.params.critic_weight)
        residual = self.residual_scale_ if self.residual_scale_ is not None else 0.0
        sd_units = np.sqrt(raw["spread"] ** 2 + residual**2)
        return self._details(score, raw["centre"], sd_units)

    # --- persistence --------------------------------------------------------------------------

    def _combination_meta(self) -> dict[str, Any]:
        return {
            "mode": self.params.combination,
            "critic_weight": self.params.critic_weight,
            "critic_mode": self.params.critic_mode,
            "rule": "score = (1 - critic_weight) * z_recon + critic_weight * z_critic; "
            "z = (raw - median) / scale, scale = 1.4826 * MAD on clean calibration windows",
            "components": self.component_stats_,
            "residual_scale": self.residual_scale_,
            **self.calibration_info_,
        }

    def _own_meta(self) -> dict[str, Any]:
        return {**super()._own_meta(), "combination": self._combination_meta()}

    def _load_extra(self, meta: dict[str, Any], directory: Path) -> None:
        """The component statistics and residual scale of ``meta['combination']``."""
        combination = meta.get("combination") or {}
        stats = combination.get("components")
        residual = combination.get("residual_scale")
        if not (
            isinstance(stats, dict)
            and all(
                isinstance(stats.get(c), dict)
                and is_finite_number(stats[c].get("median"))
                and is_finite_number(stats[c].get("scale"))
                and stats[c]["scale"] > 0
                for c in COMPONENTS
            )
            and is_finite_number(residual)
        ):
            raise ArtifactError(
                f"{directory}/{META_FILE} has invalid component statistics {combination!r} "
                "(need combination.components.{recon,critic}.{median,scale} and residual_scale)"
            )
        self.component_stats_ = {
            c: {"median": float(stats[c]["median"]), "scale": float(stats[c]["scale"])}
            for c in COMPONENTS
        }
        self.residual_scale_ = float(residual)
        self.calibration_info_ = {
            k: combination[k] for k in ("source", "n_windows") if k in combination
        }
