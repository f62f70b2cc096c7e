"""FCVAE detector: wires the network, the CM-ELBO loss and augmentation into fit/score/save/load.

Score direction: ``score`` is the **negative log-likelihood of a window's last point** (in
normalised units, averaged over latent draws); **higher = more anomalous**.

Units and normalisation
-----------------------
Raw counts are ``log1p``-transformed (``FCVAEParams.log_transform``, on by default), then
standardised with the mean and standard deviation of the **training series only**. Missing
hours (NaN) become 0 after standardisation and get ``α = 0`` in the loss. With the log,
multiplicative effects (growth, day-to-day jitter) become additive and a −50% dip weighs the
same at night as at the daily peak; the band (``expected_low``/``expected_high``) is then
asymmetric in count units.  It raised validation event F1 from 0.83 to 0.89 on the demo
data (TECHNICAL.md, "FCVAE choices"); artifacts keep the value they were trained with.

Same-hour-of-week reference (``reference_weeks``)
-------------------------------------------------
With ``reference_weeks = K > 0`` each (transformed) hour is modelled as its deviation from
the median of the same hour over the previous K weeks, and standardisation uses the
training deviations.  A scored window then holds ``window + K`` weeks of hours
(``FCVAEDetector.window``); the network still sees the last ``window`` hours.  Weekly
shape (quiet weekends, weekend peaks at other hours) and the daily cycle are in the
reference, so the network models what they leave: day-to-day level, short-range
correlation and noise.  Where all K reference hours are missing, the window's own
time-of-day median stands in.  Training deviations take their reference from whatever
earlier weeks the training series has; validation follows training directly and takes
its first weeks' reference from it.

Scoring (DESIGN §5)
-------------------
First, with ``clean_k`` set (the default), past points of the window that lie far from their
time-of-day median are replaced by it (``app.detectors.cleaning``): a past anomaly must not
make the hours after it look anomalous; with a reference, a past hour whose standardised
deviation exceeds ``clean_k`` in size is set to 0 (its reference plus the training mean
deviation).  The last point is never changed.
For each window: the condition ``c`` is computed once (it never sees the last value); then
``mcmc_rounds`` times encode → sample ``z`` → decode and replace **only the last point** with
the decoder mean (MCMC mode 2); then ``n_samples`` latents ``z_s ~ q(z | x_mcmc, c)`` are
drawn in one batched decoder call and the score is

    score = −(1/S) Σ_s log N(x_last | μ_x,s, σ²_x,s)     (average of log-densities)

with ``x_last`` the window's *original* (normalised) last value. ``expected`` is the mean of
``μ_x,s`` and ``expected_std`` the standard deviation of the mixture ``(1/S) Σ_s N(μ_x,s,
σ²_x,s)``, both de-normalised to counts (for ``log_transform``: ``expected`` is the back-
transformed centre, i.e. a median, and the band is back-transformed, see ``ScoreDetails``).
The band is ``centre ± band_sigmas · spread`` (in model units, then back to counts); counts
are non-negative, so ``expected`` and the band are clipped at 0.

Batch independence and seeds
----------------------------
A window's score depends only on the window, the model and its int64 seed: its standard-
normal draws come from ``app.detectors.draws`` (splitmix64 over ``(seed, draw index)`` →
two 24-bit uniforms → Box–Muller), computed with vectorised numpy uint64/float32 ops, never
from a generator shared across the batch. Windows are scored in fixed-size chunks of
``SCORE_CHUNK`` rows (the last chunk is padded), every op works row by row, and softplus is
computed from ``exp``/``log1p`` (torch's fused kernel rounds the tail of a vectorised loop
differently), so a window gets the same score bit for bit alone or in any batch (tested on
CPU, also across torch thread counts; on CUDA the fixed chunk shapes help but cuBLAS/cuFFT
bitwise behaviour is not verified).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from app.detectors.augment import augment_batch
from app.detectors.base import (
    SCORE_CHUNK,
    TINY_SCHEDULE,
    NetworkDetector,
    ScoreDetails,
    validate_windows,
)
from app.detectors.cleaning import lagged_median, seasonal_clean, seasonal_profile
from app.detectors.draws import window_normals
from app.detectors.fcvae.loss import LOG_2PI, cm_elbo
from app.detectors.fcvae.network import FCVAENetwork
from app.detectors.training import WindowHooks, chunked_means, clipped_step, kl_weight_at
from app.errors import ContractError, DataError

log = logging.getLogger(__name__)

#: meta.json keys written by the detector itself; ``extra_meta`` may not override them.
RESERVED_META_KEYS = frozenset(
    {"detector", "params", "normalisation", "seed", "fit", "schema_version", "versions"}
)
LOSS_TERMS = ("loss", "nll", "kl", "kl_exact")


class FCVAEParams(BaseModel):
    """FCVAE hyperparameters; written verbatim into ``meta.json``.

    Defaults follow DESIGN §5 and the reference settings (Adam lr 5e-4, cosine schedule,
    gradient clipping 2, latent 8, augmentation 5% / 10% / 1%).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Default window on a series of any step: one week of steps (at most
    #: ``app.pipeline.MAX_NETWORK_WINDOW_STEPS``); shrunk to fit a short history, never
    #: below ``MIN_WINDOW_STEPS``.
    WINDOW_IS_A_WEEK: ClassVar[bool] = True
    MIN_WINDOW_STEPS: ClassVar[int] = 16

    # network
    window: int = Field(
        168, ge=4, description="window length W (hours, one week by default); the last is scored"
    )
    latent_dim: int = Field(8, ge=1)
    hidden_dim: int = Field(100, ge=1, description="width of the encoder/decoder hidden layers")
    cond_dim: int = Field(16, ge=1, description="E: features per frequency module (c has 2E)")
    sub_window: int = Field(8, ge=2, description="LFM sub-window size k")
    stride: int = Field(4, ge=1, description="LFM sub-window stride s")
    lfm_dim: int = Field(64, ge=1, description="LFM token width (Transformer d_model)")
    lfm_ff_dim: int = Field(128, ge=1, description="LFM feed-forward width")
    n_heads: int = Field(4, ge=1, description="LFM attention heads")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on c in training")
    attn_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout in the LFM layer")
    var_floor: float = Field(1e-4, gt=0.0, description="lower bound of σ²_x (normalised)")
    log_transform: bool = Field(True, description="log1p the counts before standardising")
    # training
    lr: float = Field(5e-4, gt=0.0)
    batch_size: int = Field(256, ge=1)
    epochs: int = Field(75, ge=1)
    kl_warmup_epochs: int = Field(35, ge=0, description="KL weight rises 0 → 1 linearly")
    patience: int = Field(10, ge=1, description="early stopping, epochs after KL warm-up")
    grad_clip: float = Field(2.0, gt=0.0, description="max global gradient norm")
    min_observed_share: float = Field(
        0.5, ge=0.0, le=1.0, description="training windows need this share of present hours"
    )
    value_mutation_rate: float = Field(0.05, ge=0.0, le=1.0)
    value_mutation_min_sigma: float = Field(0.5, ge=0.0)
    value_mutation_max_sigma: float = Field(10.0, gt=0.0)
    pattern_mutation_rate: float = Field(0.1, ge=0.0, le=1.0)
    missing_injection_rate: float = Field(0.01, ge=0.0, le=1.0)
    # scoring
    mcmc_rounds: int = Field(10, ge=0, description="MCMC mode-2 rounds imputing the last point")
    mcmc_sample: bool = Field(True, description="sample z in MCMC rounds (False: use μ_z)")
    n_samples: int = Field(16, ge=1, description="latent draws averaged in the score")
    band_sigmas: float = Field(3.0, gt=0.0, description="half-width of the expected band")
    clean_k: float | None = Field(
        3.0,
        gt=0.0,
        description="before scoring, a past point further than clean_k robust σ from its "
        "time-of-day median in the window is replaced by that median (None: off; see "
        "app.detectors.cleaning)",
    )
    clean_period: int = Field(
        24, ge=2, description="steps per day (window cleaning; a week is 7 of these)"
    )
    reference_period: Literal["week", "day"] = Field(
        "week",
        description="the reference's period: the same time of the week (lag 7 days) or, "
        "for histories too short for weeks, of the day (lag 1 day)",
    )
    reference_weeks: int = Field(
        4,
        ge=0,
        le=52,
        description="model each hour relative to the median of the same hour of the week "
        "over this many previous weeks (0: off); windows then hold this many weeks more "
        "than `window`, and cleaning works on the deviations from that reference; with "
        "reference_period='day' it counts days",
    )

    @model_validator(mode="after")
    def _check(self) -> FCVAEParams:
        if self.sub_window > self.window:
            raise ValueError(f"sub_window {self.sub_window} exceeds window {self.window}")
        if self.lfm_dim % self.n_heads:
            raise ValueError(f"lfm_dim {self.lfm_dim} is not divisible by n_heads {self.n_heads}")
        if self.value_mutation_min_sigma > self.value_mutation_max_sigma:
            raise ValueError("value_mutation_min_sigma exceeds value_mutation_max_sigma")
        return self


# --- training -----------------------------------------------------------------------------------


class _FCVAETraining(WindowHooks[FCVAENetwork, FCVAEParams]):
    """FCVAE's step for the shared loop: augment, one CM-ELBO step, cosine schedule."""

    VAL_NOISE: ClassVar[int] = 1  # eps

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        p = self.p
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=p.lr)
        self.schedules = [
            torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimiser, T_max=p.epochs, eta_min=p.lr / 100.0
            )
        ]
        self.params_list = list(self.net.parameters())

    def kl_weight(self, epoch: int) -> float:
        return kl_weight_at(epoch, self.p.kl_warmup_epochs)

    def train_step(self, rows: Tensor, kl_weight: float) -> tuple[Mapping[str, Tensor], int]:
        p = self.p
        xb, okb = augment_batch(
            self.xt[rows],
            self.okt[rows],
            self.aug,
            value_rate=p.value_mutation_rate,
            pattern_rate=p.pattern_mutation_rate,
            missing_rate=p.missing_injection_rate,
            value_min_shift=p.value_mutation_min_sigma,
            value_max_shift=p.value_mutation_max_sigma,
        )
        eps = torch.randn(xb.shape[0], p.latent_dim, generator=self.noise).to(self.device)
        out = self.net(xb, eps)
        terms = cm_elbo(
            xb, out["mu_x"], out["var_x"], out["mu_z"], out["var_z"], okb, kl_weight=kl_weight
        )
        clipped_step(self.optimiser, terms["loss"], self.params_list, p.grad_clip)
        return terms, xb.shape[0]

    def eval_terms(self, kl_weight: float) -> dict[str, float] | None:
        """Validation loss terms (no augmentation, full KL weight)."""
        if self.val is None:
            return None
        x, ok, eps = self.val

        def forward(sl: slice) -> dict[str, Tensor]:
            out = self.net(x[sl], eps[sl])
            return cm_elbo(
                x[sl], out["mu_x"], out["var_x"], out["mu_z"], out["var_z"], ok[sl], kl_weight=1
            )

        return chunked_means(x.shape[0], LOSS_TERMS, forward)


# --- the detector -------------------------------------------------------------------------------


class FCVAEDetector(NetworkDetector):
    """Frequency-enhanced conditional VAE (FCVAE) scoring the last hour of a window.

    Score direction: **higher = more anomalous** (negative log-likelihood of the last point).

    Constructed from ``params`` (``FCVAEParams()`` when None) and ``device``; its fitted
    attributes are those of ``NetworkDetector``, ``mean_``/``std_`` being the statistics of
    the transformed (and, with ``reference_weeks``, referenced) training series.
    """

    name: ClassVar[str] = "fcvae"
    reserved_meta_keys: ClassVar[frozenset[str]] = RESERVED_META_KEYS
    hooks_class: ClassVar[type[_FCVAETraining]] = _FCVAETraining

    params_class: ClassVar[type[BaseModel]] = FCVAEParams
    network_class: ClassVar[type[FCVAENetwork]] = FCVAENetwork
    network_args: ClassVar[tuple[str, ...]] = (
        "window",
        "latent_dim",
        "hidden_dim",
        "cond_dim",
        "sub_window",
        "stride",
        "lfm_dim",
        "lfm_ff_dim",
        "n_heads",
        "dropout",
        "attn_dropout",
        "var_floor",
    )
    loop_plan: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {
            "terms": LOSS_TERMS,
            "monitor": "loss",
            "logged": ("loss", "nll", "kl_exact"),
            "postfix": {"loss": "train_loss", "val": "val_loss"},
        }
    )
    params: FCVAEParams
    _net: FCVAENetwork | None

    @property
    def window(self) -> int:
        """Hours a scored window holds: the network's ``params.window``, plus
        ``reference_weeks`` weeks for the same-hour-of-week reference."""
        p = self.params
        return p.window + p.reference_weeks * self.reference_lag

    @property
    def reference_lag(self) -> int:
        """Steps between a step and its reference steps: a week, or a day."""
        days = 7 if self.params.reference_period == "week" else 1
        return days * self.params.clean_period

    @staticmethod
    def tiny_params() -> FCVAEParams:
        """A small, fast configuration for tests (trains in a few seconds on a CPU)."""
        return FCVAEParams(
            **TINY_SCHEDULE,
            window=24,
            hidden_dim=48,
            cond_dim=8,
            lfm_dim=16,
            lfm_ff_dim=32,
            n_heads=2,
            mcmc_rounds=3,
            n_samples=8,
            reference_weeks=0,
        )

    def _deviations(self, transformed: NDArray[np.float64]) -> NDArray[np.float64]:
        """A transformed series minus its same-hour-of-week reference (NaN where none)."""
        p = self.params
        if not p.reference_weeks:
            return transformed
        reference = lagged_median(transformed, lag=self.reference_lag, count=p.reference_weeks)
        return transformed - reference

    # --- training -----------------------------------------------------------------------------

    def _model_series(
        self, train: NDArray[np.float64], val: NDArray[np.float64] | None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """The transformed series, minus their reference with ``reference_weeks``; ``val``
        then follows ``train`` directly: its first weeks take their reference from train."""
        train_arr = self._transform(train, "train")
        val_arr = None if val is None else self._transform(val, "val")
        if self.params.reference_weeks and val_arr is not None:
            both = self._deviations(np.concatenate([train_arr, val_arr]))
            return both[: train.shape[0]], both[train.shape[0] :]
        return self._deviations(train_arr), val_arr

    # --- scoring ------------------------------------------------------------------------------

    def score_details(self, windows: NDArray[np.float64], seeds: NDArray[np.int64]) -> ScoreDetails:
        """``Detector.score_details``: ``score`` is the negative last-point log-likelihood;
        ``expected`` is the mixture's centre, ``expected_std`` its spread, and the band is
        ``± band_sigmas`` of it in model units (see the module docstring)."""
        net = self.network
        p = self.params
        arr, seed_arr = validate_windows(windows, seeds, self.window)
        n = arr.shape[0]
        if n == 0:
            empty = np.empty(0, dtype=np.float64)
            return ScoreDetails(empty, empty.copy(), empty.copy(), empty.copy(), empty.copy())
        try:
            units, offset = self._window_units(arr)
        except DataError as exc:
            raise ContractError(str(exc)) from exc
        x = np.where(np.isnan(units), 0.0, units).astype(np.float32)
        mu = np.empty((n, p.n_samples), dtype=np.float64)
        var = np.empty((n, p.n_samples), dtype=np.float64)
        rounds, draws = p.mcmc_rounds, (p.mcmc_rounds + p.n_samples) * p.latent_dim
        net.eval()
        with torch.inference_mode():
            for start in range(0, n, SCORE_CHUNK):
                stop = min(n, start + SCORE_CHUNK)
                x_chunk = np.zeros((SCORE_CHUNK, p.window), dtype=np.float32)
                x_chunk[: stop - start] = x[start:stop]
                s_chunk = np.zeros(SCORE_CHUNK, dtype=np.int64)
                s_chunk[: stop - start] = seed_arr[start:stop]
                eps = (
                    torch.from_numpy(window_normals(s_chunk, draws))
                    .to(self.device)
                    .view(SCORE_CHUNK, rounds + p.n_samples, p.latent_dim)
                )
                mu_c, var_c = net.last_point_samples(
                    torch.from_numpy(x_chunk).to(self.device),
                    eps[:, :rounds],
                    eps[:, rounds:],
                    mcmc_sample=p.mcmc_sample,
                )
                mu[start:stop] = mu_c[: stop - start].cpu().numpy()
                var[start:stop] = var_c[: stop - start].cpu().numpy()
        last = x[:, -1:].astype(np.float64)
        log_density = -0.5 * (LOG_2PI + np.log(var) + (last - mu) ** 2 / var)
        score = -log_density.mean(axis=1)
        centre = mu.mean(axis=1)
        spread = np.sqrt(var.mean(axis=1) + ((mu - centre[:, None]) ** 2).mean(axis=1))
        centre = centre + offset  # the reference back in (model units of counts)
        return self._details(score, centre, spread)

    def _window_units(
        self, arr: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``(n, self.window)`` raw windows → the network's ``(n, params.window)`` input
        (NaN = missing) and, per window, the last hour's reference in model units (0
        without ``reference_weeks``), so that ``units + offset`` is on the scale of
        ``_to_counts``.

        Without a reference, past outliers are cleaned against their time of day in the
        window (``seasonal_clean``).  With one, each hour is its deviation from the median
        of the same hour over the previous ``reference_weeks`` weeks (the window's daily
        profile where all of those are missing), standardised with the training
        deviations; a past hour beyond ``±clean_k`` is set to 0 (its reference plus the
        training mean deviation): the scored hour is never changed.
        """
        p = self.params
        assert self.mean_ is not None and self.std_ is not None
        if not p.reference_weeks:
            if p.clean_k is not None:
                arr = seasonal_clean(arr, k=p.clean_k, period=p.clean_period)
            return self._normalise(arr, "windows"), np.zeros(arr.shape[0])
        transformed = self._transform(arr, "windows")
        reference = lagged_median(
            transformed, lag=self.reference_lag, count=p.reference_weeks, last=p.window
        )
        gaps = np.isnan(reference).any(axis=1)
        if gaps.any():  # the window's time-of-day median where every reference hour is missing
            fallback = seasonal_profile(transformed[gaps], period=p.clean_period)
            reference[gaps] = np.where(
                np.isnan(reference[gaps]), fallback[:, -p.window :], reference[gaps]
            )
        units = (transformed[:, -p.window :] - reference - self.mean_) / self.std_
        if p.clean_k is not None:
            past = units[:, :-1]
            units[:, :-1] = np.where(np.abs(past) > p.clean_k, 0.0, past)
        return units, reference[:, -1] / self.std_

    # --- persistence --------------------------------------------------------------------------

    @classmethod
    def _upgrade_params(cls, raw: Any) -> Any:
        if isinstance(raw, dict):  # older artifacts: no cleaning, no reference
            return {"clean_k": None, "reference_weeks": 0, **raw}
        return raw
