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
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from app.detectors.augment import augment_batch
from app.detectors.base import (
    FitReport,
    NetworkDetector,
    ScoreDetails,
    as_series,
    validate_windows,
)
from app.detectors.cleaning import lagged_median, seasonal_clean, seasonal_profile
from app.detectors.draws import window_normals
from app.detectors.fcvae.loss import LOG_2PI, cm_elbo
from app.detectors.fcvae.network import FCVAENetwork
from app.detectors.training import (
    LoopPlan,
    TrainingHooks,
    chunked_means,
    clipped_step,
    kl_weight_at,
    log_fit_done,
    run_training,
    seeded_training,
)
from app.detectors.windows import masked_windows, normalisation_stats
from app.errors import ContractError, DataError

log = logging.getLogger(__name__)

#: Rows per scoring chunk; every chunk (the last one padded) has exactly this many rows.
#: 128 rather than 512: a stream's micro-batch brings a few hours per combo, and one window
#: then costs 6 ms instead of 27 ms, for 7 % less peak throughput (bench: chunk sweep).
SCORE_CHUNK = 128
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


# --- the detector -------------------------------------------------------------------------------


class FCVAEDetector(NetworkDetector):
    """Frequency-enhanced conditional VAE (FCVAE) scoring the last hour of a window.

    Score direction: **higher = more anomalous** (negative log-likelihood of the last point).

    Parameters
    ----------
    params
        Hyperparameters (``FCVAEParams()`` when None).
    device
        Torch device for training and scoring (``"cpu"``; ``"cuda"`` only when asked and
        available). Threads are the caller's choice (``torch.set_num_threads``).

    Attributes
    ----------
    meta
        The artifact metadata (after ``fit``: what ``save`` will write; after ``load``: the
        parsed ``meta.json``, including whatever the caller added).
    mean_, std_
        Normalisation statistics of the (transformed) training series.
    fit_report_
        The last ``FitReport`` (None after ``load``).
    """

    name: ClassVar[str] = "fcvae"
    reserved_meta_keys: ClassVar[frozenset[str]] = RESERVED_META_KEYS

    params_class: ClassVar[type[BaseModel]] = FCVAEParams
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
            window=24,
            hidden_dim=48,
            cond_dim=8,
            lfm_dim=16,
            lfm_ff_dim=32,
            n_heads=2,
            batch_size=64,
            epochs=12,
            kl_warmup_epochs=4,
            patience=4,
            lr=3e-3,
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

    def _train_windows(
        self, series: NDArray[np.float64], what: str, mean: float, std: float
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """All sliding windows of the network's length with enough present hours, from a
        series already transformed (and referenced): values (missing → 0) and mask."""
        p = self.params
        return masked_windows((series - mean) / std, p.window, p.min_observed_share, what)

    # --- training -----------------------------------------------------------------------------

    def _build_network(self) -> FCVAENetwork:
        p = self.params
        return FCVAENetwork(
            window=p.window,
            latent_dim=p.latent_dim,
            hidden_dim=p.hidden_dim,
            cond_dim=p.cond_dim,
            sub_window=p.sub_window,
            stride=p.stride,
            lfm_dim=p.lfm_dim,
            lfm_ff_dim=p.lfm_ff_dim,
            n_heads=p.n_heads,
            dropout=p.dropout,
            attn_dropout=p.attn_dropout,
            var_floor=p.var_floor,
        )

    def fit(
        self,
        train: NDArray[np.float64],
        *,
        val: NDArray[np.float64] | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> FitReport:
        """Train on a raw hourly count series; early-stop on ``val`` when given.

        Parameters
        ----------
        train
            1-D raw counts on a regular hourly grid, NaN = missing hour. Normalisation
            statistics come from this series only.
        val
            Optional 1-D validation series (same grid rules). Its windows are cut within it
            (prepend the last ``W − 1`` training hours to validate on its first hours) and
            scored without augmentation.  With ``reference_weeks``, ``val`` must follow
            ``train`` directly: its first weeks take their reference from train.  Without
            ``val``, all ``epochs`` run and the last weights are kept.
        seed
            Seeds weight initialisation, shuffling, augmentation, dropout and latent noise,
            through private generators (the global torch RNG is restored afterwards).
        progress
            Show a tqdm progress bar over epochs.

        Returns
        -------
        FitReport

        Raises
        ------
        DataError
            The series is not 1-D, holds inf (or negative counts with ``log_transform``),
            has no present hour, or is too short to give two training windows.
        """
        started = time.perf_counter()
        p = self.params
        train_arr = self._transform(as_series(train, "train"), "train")
        train_len = train_arr.shape[0]
        val_arr = None if val is None else self._transform(as_series(val, "val"), "val")
        if p.reference_weeks and val_arr is not None:
            # val follows train: its first weeks take their reference from train's last.
            both = self._deviations(np.concatenate([train_arr, val_arr]))
            train_arr, val_arr = both[:train_len], both[train_len:]
        else:
            train_arr = self._deviations(train_arr)
        mean, std = normalisation_stats(train_arr)
        x_train, ok_train = self._train_windows(train_arr, "train", mean, std)
        if x_train.shape[0] < 2:
            raise DataError(
                f"train gives {x_train.shape[0]} usable windows of {p.window} steps; need >= 2 "
                f"(series length {train_len}, min_observed_share {p.min_observed_share})"
            )
        x_val: NDArray[np.float32] | None = None
        ok_val: NDArray[np.bool_] | None = None
        if val_arr is not None:
            x_val, ok_val = self._train_windows(val_arr, "val", mean, std)
            if x_val.shape[0] == 0:
                raise DataError("val gives no usable window; pass a longer validation series")

        with seeded_training(seed, self.device) as rng:
            net = self._build_network().to(self.device)
            hooks = _FCVAETraining(net, p, self.device, rng.aug, rng.noise, x_train, ok_train)
            hooks.set_validation(x_val, ok_val)
            report = run_training(
                net,
                hooks,
                LoopPlan.from_params(
                    self.name,
                    p,
                    terms=LOSS_TERMS,
                    monitor="loss",
                    logged=("loss", "nll", "kl_exact"),
                    postfix={"loss": "train_loss", "val": "val_loss"},
                ),
                n_windows=x_train.shape[0],
                n_val_windows=0 if x_val is None else x_val.shape[0],
                rng=rng,
                device=self.device,
                progress=progress,
            )
        # Fitted state changes only here, once training succeeded.
        self._net = net.eval()
        self.mean_, self.std_ = mean, std
        self.seed_ = int(seed)
        report.seconds = time.perf_counter() - started
        self.fit_report_ = report
        self.meta = self._own_meta()
        log_fit_done(self.name, report, "val_loss")
        return report

    # --- scoring ------------------------------------------------------------------------------

    def score_details(self, windows: NDArray[np.float64], seeds: NDArray[np.int64]) -> ScoreDetails:
        """Score the last point of each window (higher = more anomalous), with expectations.

        Parameters
        ----------
        windows
            ``(n, W)`` raw counts, NaN = missing hour; the last point must be present.
        seeds
            ``(n,)`` int64, one per window; a window's draws depend on its seed alone.

        Returns
        -------
        ScoreDetails
            ``score`` (negative last-point log-likelihood), ``expected``, ``expected_std``,
            ``expected_low``, ``expected_high`` (counts), each float64 of shape ``(n,)``.

        Raises
        ------
        NotFittedError
            Before ``fit``/``load``.
        ContractError
            Bad shapes, non-integer seeds, inf, a missing last point, or (with
            ``log_transform``) negative counts.
        """
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


class _FCVAETraining(TrainingHooks):
    """FCVAE's step for the shared loop: augment, one CM-ELBO step, cosine schedule."""

    def __init__(
        self,
        net: FCVAENetwork,
        params: FCVAEParams,
        device: torch.device,
        aug: torch.Generator,
        noise: torch.Generator,
        x_train: NDArray[np.float32],
        ok_train: NDArray[np.bool_],
    ) -> None:
        self.net, self.p, self.device, self.aug, self.noise = net, params, device, aug, noise
        self.optimiser = torch.optim.Adam(net.parameters(), lr=params.lr)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimiser, T_max=params.epochs, eta_min=params.lr / 100.0
        )
        self.params_list = list(net.parameters())
        self.xt = torch.from_numpy(x_train).to(device)
        self.okt = torch.from_numpy(ok_train).to(device)
        self.val: tuple[Tensor, Tensor, Tensor] | None = None

    def set_validation(
        self, x_val: NDArray[np.float32] | None, ok_val: NDArray[np.bool_] | None
    ) -> None:
        if x_val is None or ok_val is None:
            return
        # The same latent noise every epoch, so validation losses compare like with like.
        eps_val = torch.randn(x_val.shape[0], self.p.latent_dim, generator=self.noise)
        self.val = (
            torch.from_numpy(x_val).to(self.device),
            torch.from_numpy(ok_val).to(self.device),
            eps_val.to(self.device),
        )

    def kl_weight(self, epoch: int) -> float:
        return kl_weight_at(epoch, self.p.kl_warmup_epochs)

    def learning_rate(self) -> float:
        return float(self.optimiser.param_groups[0]["lr"])

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

    def end_epoch(self) -> None:
        self.schedule.step()

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
