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
normal draws come from a counter-based generator (splitmix64 over ``(seed, draw index)`` →
two 24-bit uniforms → Box–Muller), computed with vectorised numpy uint64/float32 ops, never
from a generator shared across the batch. Windows are scored in fixed-size chunks of
``SCORE_CHUNK`` rows (the last chunk is padded), every op works row by row, and softplus is
computed from ``exp``/``log1p`` (torch's fused kernel rounds the tail of a vectorised loop
differently), so a window gets the same score bit for bit alone or in any batch (tested on
CPU, also across torch thread counts; on CUDA the fixed chunk shapes help but cuBLAS/cuFFT
bitwise behaviour is not verified).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import Tensor
from tqdm.auto import tqdm

from app.detectors.base import (
    META_FILE,
    FitReport,
    NetworkDetector,
    ScoreDetails,
    as_series,
    read_artifact,
    resolve_device,
    validate_windows,
)
from app.detectors.cleaning import lagged_median, seasonal_clean, seasonal_profile
from app.detectors.fcvae.augment import augment_batch
from app.detectors.fcvae.loss import LOG_2PI, cm_elbo, kl_weight_at
from app.detectors.fcvae.network import FCVAENetwork
from app.errors import ArtifactError, ContractError, DataError

log = logging.getLogger(__name__)

#: Rows per scoring chunk; every chunk (the last one padded) has exactly this many rows.
#: 128 rather than 512: a stream's micro-batch brings a few hours per combo, and one window
#: then costs 6 ms instead of 27 ms, for 7 % less peak throughput (bench: chunk sweep).
SCORE_CHUNK = 128
#: Windows per forward pass when computing the validation loss.
_EVAL_CHUNK = 4096
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


# --- counter-based normal draws ---------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_STREAM = np.uint64(0x46435641455F4E31)  # separates FCVAE draws from other users of a seed
_SHIFTS = tuple(np.uint64(k) for k in (8, 27, 30, 31, 40))
_MASK24 = np.uint64(0xFFFFFF)
_TWO_POW_M24 = np.float32(2.0**-24)


def splitmix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic).

    Examples
    --------
    >>> hex(int(splitmix64(np.array([0x9E3779B97F4A7C15], dtype=np.uint64))[0]))
    '0xe220a8397b1dcdaf'
    """
    _, s27, s30, s31, _ = _SHIFTS
    x = (x ^ (x >> s30)) * _MIX1
    x = (x ^ (x >> s27)) * _MIX2
    return x ^ (x >> s31)


def window_normals(seeds: NDArray[np.int64], count: int) -> NDArray[np.float32]:
    """``(n, count)`` float32 standard-normal draws; row ``i`` depends only on ``seeds[i]``.

    Draw pair ``j`` of a row is ``splitmix64(key + (j + 1)·γ)`` with
    ``key = splitmix64(seed ⊕ stream)`` (a counter-based generator: no state shared between
    rows); two 24-bit halves of it give ``u1 ∈ (0, 1]`` and ``u2 ∈ [0, 1)`` exactly in
    float32, and Box–Muller gives ``√(−2 ln u1)·(cos 2πu2, sin 2πu2)``. Every element goes
    through the same vectorised numpy kernels, so a row is identical in any batch.

    Examples
    --------
    >>> a = window_normals(np.array([5, 6]), 4)
    >>> b = window_normals(np.array([6]), 4)
    >>> bool(np.array_equal(a[1], b[0])), a.shape, a.dtype.name
    (True, (2, 4), 'float32')
    """
    s8, _, _, _, s40 = _SHIFTS
    seeds = np.ascontiguousarray(seeds, dtype=np.int64)
    n_pairs = (count + 1) // 2
    key = splitmix64(seeds.view(np.uint64) ^ _STREAM)
    counters = np.arange(1, n_pairs + 1, dtype=np.uint64) * _GOLDEN
    bits = splitmix64(key[:, None] + counters[None, :])
    u1 = ((bits >> s40).astype(np.float32) + np.float32(1.0)) * _TWO_POW_M24
    u2 = ((bits >> s8) & _MASK24).astype(np.float32) * _TWO_POW_M24
    radius = np.sqrt(np.float32(-2.0) * np.log(u1))
    angle = np.float32(2.0 * math.pi) * u2
    pairs = np.stack((radius * np.cos(angle), radius * np.sin(angle)), axis=-1)
    return np.ascontiguousarray(pairs.reshape(seeds.shape[0], 2 * n_pairs)[:, :count])


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

    def __init__(self, params: FCVAEParams | None = None, device: str = "cpu") -> None:
        self.params = params if params is not None else FCVAEParams()
        self.device = resolve_device(device)
        self.meta: dict[str, Any] = {}
        self.mean_: float | None = None
        self.std_: float | None = None
        self.seed_: int | None = None
        self.fit_report_: FitReport | None = None
        self._net: FCVAENetwork | None = None

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
        w = self.params.window
        if series.shape[0] < w:
            raise DataError(f"{what} has {series.shape[0]} steps; need at least window={w}")
        units = (series - mean) / std
        units = np.lib.stride_tricks.sliding_window_view(units, w)
        usable = ~np.isnan(units)
        keep = usable.mean(axis=1) >= self.params.min_observed_share
        keep &= usable.any(axis=1)
        values = np.where(usable, units, 0.0)[keep].astype(np.float32)
        return np.ascontiguousarray(values), np.ascontiguousarray(usable[keep])

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
        finite = train_arr[~np.isnan(train_arr)]
        if finite.size < 2:
            raise DataError(f"train has {finite.size} present steps; need many more")
        mean, std = float(finite.mean()), float(finite.std())
        if not std > 1e-12 * max(1.0, abs(mean)):
            log.warning("train is constant (%.6g); using std=1 for normalisation", mean)
            std = 1.0
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

        init_seed, shuffle_seed, aug_seed, noise_seed = (
            int(s) for s in np.random.SeedSequence(seed).generate_state(4)
        )
        rng_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(init_seed)
            net, report = self._train(
                x_train,
                ok_train,
                x_val,
                ok_val,
                shuffle=torch.Generator().manual_seed(shuffle_seed),
                aug=torch.Generator().manual_seed(aug_seed),
                noise=torch.Generator().manual_seed(noise_seed),
                progress=progress,
            )
        # Fitted state changes only here, once training succeeded.
        self._net = net.eval()
        self.mean_, self.std_ = mean, std
        self.seed_ = int(seed)
        report.seconds = time.perf_counter() - started
        self.fit_report_ = report
        self.meta = self._own_meta()
        log.info(
            "fcvae fit done: %d epochs (best %d, val_loss=%.4f) in %.1fs (%.2fs/epoch), "
            "%d train / %d val windows",
            report.epochs_run,
            report.best_epoch,
            report.best_val_loss,
            report.seconds,
            report.seconds_per_epoch,
            report.n_train_windows,
            report.n_val_windows,
        )
        return report

    def _train(
        self,
        x_train: NDArray[np.float32],
        ok_train: NDArray[np.bool_],
        x_val: NDArray[np.float32] | None,
        ok_val: NDArray[np.bool_] | None,
        *,
        shuffle: torch.Generator,
        aug: torch.Generator,
        noise: torch.Generator,
        progress: bool,
    ) -> tuple[FCVAENetwork, FitReport]:
        p, dev = self.params, self.device
        net = self._build_network().to(dev)
        optimiser = torch.optim.Adam(net.parameters(), lr=p.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimiser, T_max=p.epochs, eta_min=p.lr / 100.0
        )
        xt, okt = torch.from_numpy(x_train).to(dev), torch.from_numpy(ok_train).to(dev)
        val_t: tuple[Tensor, Tensor, Tensor] | None = None
        if x_val is not None and ok_val is not None:
            # The same latent noise every epoch, so validation losses compare like with like.
            eps_val = torch.randn(x_val.shape[0], p.latent_dim, generator=noise)
            val_t = (
                torch.from_numpy(x_val).to(dev),
                torch.from_numpy(ok_val).to(dev),
                eps_val.to(dev),
            )
        history: dict[str, list[float]] = {
            f"{split}_{term}": [] for split in ("train", "val") for term in LOSS_TERMS
        }
        history.update({"kl_weight": [], "lr": [], "epoch_seconds": []})
        n = xt.shape[0]
        # Best-epoch tracking (and patience) start once the KL weight has reached 1.
        first_eligible = min(p.kl_warmup_epochs, p.epochs - 1)
        best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(net.state_dict())
        bad_epochs, stopped_early, epochs_run = 0, False, 0
        bar = tqdm(range(p.epochs), desc="fcvae", unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            epoch_start = time.perf_counter()
            kl_w = kl_weight_at(epoch, p.kl_warmup_epochs)
            lr = optimiser.param_groups[0]["lr"]
            net.train()
            sums = dict.fromkeys(LOSS_TERMS, 0.0)
            seen = 0
            order = torch.randperm(n, generator=shuffle).to(dev)
            for start in range(0, n, p.batch_size):
                idx = order[start : start + p.batch_size]
                xb, okb = augment_batch(
                    xt[idx],
                    okt[idx],
                    aug,
                    value_rate=p.value_mutation_rate,
                    pattern_rate=p.pattern_mutation_rate,
                    missing_rate=p.missing_injection_rate,
                    value_min_shift=p.value_mutation_min_sigma,
                    value_max_shift=p.value_mutation_max_sigma,
                )
                eps = torch.randn(xb.shape[0], p.latent_dim, generator=noise).to(dev)
                out = net(xb, eps)
                terms = cm_elbo(
                    xb, out["mu_x"], out["var_x"], out["mu_z"], out["var_z"], okb, kl_weight=kl_w
                )
                optimiser.zero_grad(set_to_none=True)
                terms["loss"].backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), p.grad_clip)
                optimiser.step()
                for term in LOSS_TERMS:
                    sums[term] += float(terms[term].detach()) * xb.shape[0]
                seen += xb.shape[0]
            schedule.step()
            epochs_run = epoch + 1
            for term in LOSS_TERMS:
                history[f"train_{term}"].append(sums[term] / seen)
            val_terms = self._evaluate(net, *val_t) if val_t is not None else None
            for term in LOSS_TERMS:
                history[f"val_{term}"].append(math.nan if val_terms is None else val_terms[term])
            history["kl_weight"].append(kl_w)
            history["lr"].append(lr)
            history["epoch_seconds"].append(time.perf_counter() - epoch_start)
            log.info(
                "fcvae epoch %d/%d train_loss=%.4f train_nll=%.4f train_kl=%.4f "
                "val_loss=%.4f val_nll=%.4f val_kl=%.4f kl_weight=%.3f lr=%.2e",
                epochs_run,
                p.epochs,
                *(
                    history[f"{s}_{t}"][-1]
                    for s in ("train", "val")
                    for t in ("loss", "nll", "kl_exact")
                ),
                kl_w,
                lr,
            )
            bar.set_postfix(
                loss=f"{history['train_loss'][-1]:.3f}", val=f"{history['val_loss'][-1]:.3f}"
            )
            if val_terms is None or epoch < first_eligible:
                continue
            if val_terms["loss"] < best_loss:
                best_loss, best_epoch, bad_epochs = val_terms["loss"], epochs_run, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                bad_epochs += 1
                if bad_epochs >= p.patience:
                    stopped_early = epochs_run < p.epochs
                    log.info("fcvae early stop after epoch %d (best %d)", epochs_run, best_epoch)
                    break
        bar.close()
        if val_t is not None:
            net.load_state_dict(best_state)
        else:
            best_epoch = epochs_run
        report = FitReport(
            epochs_run=epochs_run,
            best_epoch=best_epoch,
            best_val_loss=best_loss if val_t is not None else math.nan,
            history=history,
            n_train_windows=int(n),
            n_val_windows=0 if x_val is None else int(x_val.shape[0]),
            stopped_early=stopped_early,
        )
        return net, report

    @staticmethod
    def _evaluate(net: FCVAENetwork, x: Tensor, ok: Tensor, eps: Tensor) -> dict[str, float]:
        """Validation loss terms (eval mode, no augmentation, full KL weight)."""
        net.eval()
        sums = dict.fromkeys(LOSS_TERMS, 0.0)
        with torch.no_grad():
            for start in range(0, x.shape[0], _EVAL_CHUNK):
                sl = slice(start, start + _EVAL_CHUNK)
                out = net(x[sl], eps[sl])
                terms = cm_elbo(
                    x[sl], out["mu_x"], out["var_x"], out["mu_z"], out["var_z"], ok[sl], kl_weight=1
                )
                for term in LOSS_TERMS:
                    sums[term] += float(terms[term]) * x[sl].shape[0]
        return {term: sums[term] / x.shape[0] for term in LOSS_TERMS}

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
        k = p.band_sigmas
        assert self.std_ is not None
        if p.log_transform:
            expected = np.maximum(self._to_counts(centre), 0.0)
            low = np.maximum(self._to_counts(centre - k * spread), 0.0)
            high = np.maximum(self._to_counts(centre + k * spread), 0.0)
            expected_std = (high - low) / (2.0 * k)
        else:
            raw_centre = self._to_counts(centre)
            expected_std = spread * self.std_
            expected = np.maximum(raw_centre, 0.0)
            low = np.maximum(raw_centre - k * expected_std, 0.0)
            high = np.maximum(raw_centre + k * expected_std, 0.0)
        return ScoreDetails(
            score=score.astype(np.float64),
            expected=expected.astype(np.float64),
            expected_std=expected_std.astype(np.float64),
            expected_low=low.astype(np.float64),
            expected_high=high.astype(np.float64),
        )

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

    def _own_meta(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "params": self.params.model_dump(mode="json"),
            "normalisation": {
                "mean": self.mean_,
                "std": self.std_,
                "log_transform": self.params.log_transform,
            },
            "seed": self.seed_,
            "fit": None if self.fit_report_ is None else self.fit_report_.to_dict(),
        }

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> Self:
        """Rebuild a fitted detector from ``directory`` (see ``app.detectors.base``).

        Raises
        ------
        ArtifactError
            Missing/corrupt files, another detector's or schema's artifact, invalid params
            or normalisation, or weights that do not match the params.
        """
        meta, state_dicts = read_artifact(Path(directory), cls.name, device=device)
        try:
            raw_params = meta.get("params")
            if isinstance(raw_params, dict):  # older artifacts: no cleaning, no reference
                raw_params = {"clean_k": None, "reference_weeks": 0, **raw_params}
            params = FCVAEParams.model_validate(raw_params)
        except ValidationError as exc:
            raise ArtifactError(f"{directory}/{META_FILE} has invalid params: {exc}") from exc
        norm = meta.get("normalisation") or {}
        mean, std = norm.get("mean"), norm.get("std")
        if not (
            isinstance(mean, int | float)
            and isinstance(std, int | float)
            and math.isfinite(mean)
            and math.isfinite(std)
            and std > 0
        ):
            raise ArtifactError(
                f"{directory}/{META_FILE} has invalid normalisation {norm!r} (need finite "
                "mean and positive std)"
            )
        detector = cls(params, device=device)
        net = detector._build_network().to(detector.device)
        try:
            net.load_state_dicts(state_dicts)
        except (KeyError, RuntimeError) as exc:
            raise ArtifactError(f"weights in {directory} do not match its params: {exc}") from exc
        detector._net = net.eval()
        detector.mean_, detector.std_ = float(mean), float(std)
        seed = meta.get("seed")
        detector.seed_ = int(seed) if isinstance(seed, int) else None
        detector.meta = meta
        return detector
