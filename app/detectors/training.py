"""The one training loop every network detector runs, and the report of one ``fit``.

A detector says what one optimisation step and one validation pass are
(``TrainingHooks.train_step`` / ``TrainingHooks.eval_terms``); this module owns the rest:
seeded private generators, shuffling into mini-batches, the linear KL warm-up, per-epoch
averages of the named loss terms (``FitReport.history``), the progress bar and log line,
divergence checks, early stopping on a validation term once the warm-up is over, and
restoring the best weights.  ``WindowHooks`` holds what every window detector's hooks start
from (network, params, generators, training windows, fixed validation noise) and steps its
learning-rate schedules per epoch.  Optimisers and gradient clipping are per step and per
optimiser, so they stay in the hooks (``clipped_step`` is the shared way to take one).

The loop draws from the generators in a fixed order (the shuffle once per epoch, then
whatever the hooks draw per batch), so a seed gives the same weights on every run.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel
from torch import Tensor
from tqdm.auto import tqdm

from app.errors import DataError

log = logging.getLogger(__name__)

#: Windows per forward pass when computing validation losses.
EVAL_CHUNK = 4096


@dataclass
class FitReport:
    """What one ``fit`` did.

    Attributes
    ----------
    epochs_run
        Epochs actually trained (fewer than asked when early stopping fired).
    best_epoch
        1-based epoch whose weights were kept (the one with the lowest validation loss; the
        last epoch when no validation series was given).
    best_val_loss
        Validation loss of the kept weights (NaN without a validation series).
    history
        Per-epoch values, one list per named term: ``train_<term>`` and ``val_<term>`` for each
        loss term (``loss``, ``nll``, ``kl``), plus ``lr`` and ``kl_weight``.
    seconds
        Wall-clock seconds spent in ``fit``.
    n_train_windows, n_val_windows
        Windows trained / validated on (before augmentation).
    stopped_early
        True when early stopping ended training before ``epochs``.
    """

    epochs_run: int
    best_epoch: int
    best_val_loss: float
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    n_train_windows: int = 0
    n_val_windows: int = 0
    stopped_early: bool = False

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall-clock seconds per epoch run."""
        return self.seconds / max(self.epochs_run, 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (non-finite floats become ``None``)."""
        report: dict[str, Any] = jsonable(asdict(self))
        return report


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, paths as str, NaN/inf as None.

    Examples
    --------
    >>> jsonable({"a": np.float32(0.5), "b": [float("nan"), Path("x")]})
    {'a': 0.5, 'b': [None, 'x']}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="json"))
    return value


def kl_weight_at(epoch: int, warmup_epochs: int) -> float:
    """Linear KL annealing: 0 at epoch 0, 1 from epoch ``warmup_epochs`` on (0-based epochs).

    Examples
    --------
    >>> [kl_weight_at(e, 4) for e in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    >>> kl_weight_at(0, 0)
    1.0
    """
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, epoch / warmup_epochs)


@dataclass(frozen=True)
class TrainingRandomness:
    """Private generators for one ``fit``: the global torch RNG is never drawn from.

    ``shuffle`` orders mini-batches, ``aug`` drives augmentation, ``noise`` the latent draws;
    ``extra`` holds further integer seeds a detector asked for (e.g. calibration windows).
    """

    shuffle: torch.Generator
    aug: torch.Generator
    noise: torch.Generator
    extra: tuple[int, ...] = ()


@contextmanager
def seeded_training(
    seed: int, device: torch.device, *, n_extra: int = 0
) -> Iterator[TrainingRandomness]:
    """Seed weight initialisation and hand out private generators; restore the global RNG.

    The seed is split with ``numpy.random.SeedSequence`` into ``4 + n_extra`` words: weight
    initialisation (the global torch seed inside the block), shuffling, augmentation, noise,
    then the extra seeds.
    """
    init_seed, shuffle_seed, aug_seed, noise_seed, *extra = (
        int(s) for s in np.random.SeedSequence(seed).generate_state(4 + n_extra)
    )
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(init_seed)
        yield TrainingRandomness(
            shuffle=torch.Generator().manual_seed(shuffle_seed),
            aug=torch.Generator().manual_seed(aug_seed),
            noise=torch.Generator().manual_seed(noise_seed),
            extra=tuple(extra),
        )


def clipped_step(
    optimiser: torch.optim.Optimizer, loss: Tensor, params: Sequence[Tensor], max_norm: float
) -> None:
    """One optimiser step on ``loss`` with the parameters' global gradient norm clipped."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimiser.step()


def chunked_means(
    n: int, terms: tuple[str, ...], forward: Callable[[slice], Mapping[str, Tensor | float]]
) -> dict[str, float]:
    """Row-weighted means of ``forward``'s loss terms over ``n`` rows in ``EVAL_CHUNK`` slices.

    ``forward(slice)`` returns each term's mean over the rows of that slice.
    """
    sums = dict.fromkeys(terms, 0.0)
    with torch.no_grad():
        for start in range(0, n, EVAL_CHUNK):
            sl = slice(start, min(n, start + EVAL_CHUNK))
            out = forward(sl)
            for term in terms:
                sums[term] += float(out[term]) * (sl.stop - sl.start)
    return {term: sums[term] / n for term in terms}


@dataclass(frozen=True)
class LoopPlan:
    """How long and on what a detector trains; its names for logs and history.

    Attributes
    ----------
    name
        The detector's name (progress bar, log lines).
    epochs, batch_size, kl_warmup_epochs, patience
        The schedule: best-epoch tracking and patience start once the KL warm-up is over.
    terms
        Named loss terms averaged per epoch, in ``history`` as ``train_<t>``/``val_<t>``.
    monitor
        The validation term early stopping minimises (and ``best_val_loss`` reports).
    logged
        Terms shown in the per-epoch log line (default: all of ``terms``).
    postfix
        Progress-bar label → ``history`` key.
    stop_on_divergence
        Raise ``DataError`` when a training term is not finite after an epoch.
    """

    name: str
    epochs: int
    batch_size: int
    kl_warmup_epochs: int
    patience: int
    terms: tuple[str, ...]
    monitor: str
    logged: tuple[str, ...] = ()
    postfix: Mapping[str, str] = field(default_factory=dict)
    stop_on_divergence: bool = False

    @classmethod
    def from_params(cls, name: str, params: Any, **fields: Any) -> LoopPlan:
        """A plan with the schedule (epochs, batch size, warm-up, patience) of ``params``."""
        return cls(
            name=name,
            epochs=params.epochs,
            batch_size=params.batch_size,
            kl_warmup_epochs=params.kl_warmup_epochs,
            patience=params.patience,
            **fields,
        )


class TrainingHooks(ABC):
    """What a detector contributes to ``run_training``."""

    @abstractmethod
    def kl_weight(self, epoch: int) -> float:
        """The KL weight of 0-based ``epoch``."""

    @abstractmethod
    def learning_rate(self) -> float:
        """The current learning rate (recorded in ``history['lr']``)."""

    @abstractmethod
    def train_step(self, rows: Tensor, kl_weight: float) -> tuple[Mapping[str, Tensor], int]:
        """Train on the training windows ``rows`` (indices).

        Returns the batch's loss terms (means over its windows) and how many windows they
        average over (more than ``len(rows)`` where augmentation appended copies).
        """

    @abstractmethod
    def end_epoch(self) -> None:
        """Advance per-epoch schedules."""

    @abstractmethod
    def eval_terms(self, kl_weight: float) -> dict[str, float] | None:
        """The validation loss terms (network in eval mode), or None without validation."""


class LatentParams(Protocol):
    """What ``WindowHooks`` reads of a detector's params."""

    @property
    def latent_dim(self) -> int:
        """Width of the latent noise drawn per window."""
        ...


NetT = TypeVar("NetT", bound=torch.nn.Module)
ParamsT = TypeVar("ParamsT", bound=LatentParams)


class WindowHooks(TrainingHooks, Generic[NetT, ParamsT]):
    """Hooks of a detector that trains on windows: the state every step starts from.

    ``xt``/``okt`` hold the training windows and their presence mask on ``device``; ``aug``
    and ``noise`` are the fit's private augmentation and latent-noise generators.  ``val``
    stays None until ``set_validation`` sets it to ``(x, ok, *noise)``: the validation
    windows, their mask and ``VAL_NOISE`` latent-noise tensors ``(n_val, latent_dim)``,
    drawn once from ``noise`` in that order, so every epoch validates on the same draws.

    Subclasses add their optimisers in ``__init__`` after ``super().__init__`` and put their
    learning-rate schedules in ``schedules`` (stepped once per epoch, in order; the first
    one's learning rate is the one recorded in ``history['lr']``).
    """

    VAL_NOISE: ClassVar[int]
    schedules: list[torch.optim.lr_scheduler.LRScheduler]

    def __init__(
        self,
        net: NetT,
        params: ParamsT,
        device: torch.device,
        aug: torch.Generator,
        noise: torch.Generator,
        x_train: NDArray[np.float32],
        ok_train: NDArray[np.bool_],
    ) -> None:
        self.net, self.p, self.device, self.aug, self.noise = net, params, device, aug, noise
        self.xt = torch.from_numpy(x_train).to(device)
        self.okt = torch.from_numpy(ok_train).to(device)
        self.val: tuple[Tensor, ...] | None = None

    def set_validation(
        self, x_val: NDArray[np.float32] | None, ok_val: NDArray[np.bool_] | None
    ) -> None:
        """Keep the validation windows and draw their fixed latent noise (None: no-op)."""
        if x_val is None or ok_val is None:
            return
        # The same latent noise every epoch, so validation losses compare like with like.
        draws = [
            torch.randn(x_val.shape[0], self.p.latent_dim, generator=self.noise)
            for _ in range(self.VAL_NOISE)
        ]
        self.val = (
            torch.from_numpy(x_val).to(self.device),
            torch.from_numpy(ok_val).to(self.device),
            *(draw.to(self.device) for draw in draws),
        )

    def learning_rate(self) -> float:
        return float(self.schedules[0].optimizer.param_groups[0]["lr"])

    def end_epoch(self) -> None:
        for schedule in self.schedules:
            schedule.step()


def run_training(
    net: torch.nn.Module,
    hooks: TrainingHooks,
    plan: LoopPlan,
    *,
    n_windows: int,
    n_val_windows: int,
    rng: TrainingRandomness,
    device: torch.device,
    progress: bool,
) -> FitReport:
    """Train ``net`` through ``hooks`` for ``plan.epochs`` epochs; keep the best weights.

    Returns the ``FitReport`` (``seconds`` is left to the caller, who also timed the data
    preparation).  With validation the weights of the epoch with the lowest
    ``plan.monitor`` (after the KL warm-up) are restored; without it the last ones stay.
    """
    history = _empty_history(plan.terms)
    first_eligible = min(plan.kl_warmup_epochs, plan.epochs - 1)
    best = _BestWeights(net)
    stopped_early, epochs_run, validated = False, 0, False
    bar = tqdm(range(plan.epochs), desc=plan.name, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        epoch_start = time.perf_counter()
        kl_w = hooks.kl_weight(epoch)
        lr = hooks.learning_rate()
        train_terms = _train_epoch(net, hooks, plan, kl_w, n_windows, rng.shuffle, device)
        epochs_run = epoch + 1
        net.eval()
        val_terms = hooks.eval_terms(kl_w)
        validated = val_terms is not None
        for term in plan.terms:
            history[f"train_{term}"].append(train_terms[term])
            history[f"val_{term}"].append(math.nan if val_terms is None else val_terms[term])
        history["kl_weight"].append(kl_w)
        history["lr"].append(lr)
        history["epoch_seconds"].append(time.perf_counter() - epoch_start)
        _log_epoch(plan, history, epochs_run, kl_w, lr)
        bar.set_postfix({label: f"{history[key][-1]:.3f}" for label, key in plan.postfix.items()})
        if plan.stop_on_divergence:
            _check_finite(plan, train_terms, epochs_run)
        if val_terms is None or epoch < first_eligible:
            continue
        if not best.update(val_terms[plan.monitor], epochs_run, net) and (
            best.bad_epochs >= plan.patience
        ):
            stopped_early = epochs_run < plan.epochs
            log.info("%s early stop after epoch %d (best %d)", plan.name, epochs_run, best.epoch)
            break
    bar.close()
    if validated:
        net.load_state_dict(best.state)
    return FitReport(
        epochs_run=epochs_run,
        best_epoch=best.epoch if validated else epochs_run,
        best_val_loss=best.loss if validated else math.nan,
        history=history,
        n_train_windows=int(n_windows),
        n_val_windows=int(n_val_windows),
        stopped_early=stopped_early,
    )


def _empty_history(terms: Sequence[str]) -> dict[str, list[float]]:
    """``FitReport.history`` before the first epoch: ``train_<t>``/``val_<t>`` per term,
    then ``kl_weight``, ``lr`` and ``epoch_seconds``.

    Examples
    --------
    >>> list(_empty_history(("loss", "kl")))
    ['train_loss', 'train_kl', 'val_loss', 'val_kl', 'kl_weight', 'lr', 'epoch_seconds']
    """
    history: dict[str, list[float]] = {
        f"{split}_{term}": [] for split in ("train", "val") for term in terms
    }
    history.update({"kl_weight": [], "lr": [], "epoch_seconds": []})
    return history


def _train_epoch(
    net: torch.nn.Module,
    hooks: TrainingHooks,
    plan: LoopPlan,
    kl_weight: float,
    n_windows: int,
    shuffle: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    """One pass over the training windows in a shuffled order, then the hooks' end of
    epoch; each term's mean over the epoch (weighted by the steps' weights)."""
    net.train()
    sums = dict.fromkeys(plan.terms, 0.0)
    seen = 0
    order = torch.randperm(n_windows, generator=shuffle).to(device)
    for start in range(0, n_windows, plan.batch_size):
        rows = order[start : start + plan.batch_size]
        terms, weight = hooks.train_step(rows, kl_weight)
        for term in plan.terms:
            sums[term] += float(terms[term].detach()) * weight
        seen += weight
    hooks.end_epoch()
    return {term: sums[term] / seen for term in plan.terms}


def _log_epoch(
    plan: LoopPlan, history: dict[str, list[float]], epochs_run: int, kl_w: float, lr: float
) -> None:
    """The per-epoch log line: the logged terms' train and validation values."""
    logged = plan.logged or plan.terms
    log.info(
        "%s epoch %d/%d %s kl_weight=%.4f lr=%.2e",
        plan.name,
        epochs_run,
        plan.epochs,
        " ".join(
            f"{s}_{t}={history[f'{s}_{t}'][-1]:.4f}" for s in ("train", "val") for t in logged
        ),
        kl_w,
        lr,
    )


def _check_finite(plan: LoopPlan, train_terms: Mapping[str, float], epochs_run: int) -> None:
    """``DataError`` when a training term of the epoch is not finite (training diverged)."""
    if not all(math.isfinite(train_terms[t]) for t in plan.terms):
        raise DataError(
            f"{plan.name} training diverged at epoch {epochs_run}: "
            f"{ {t: train_terms[t] for t in plan.terms} } "
            "(lower the learning rate or the adversarial weight)"
        )


class _BestWeights:
    """The lowest monitored validation loss so far, its 1-based epoch and a copy of the
    weights then, and the epochs since it (early stopping's count)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.loss, self.epoch, self.bad_epochs = math.inf, 0, 0
        self.state = copy.deepcopy(net.state_dict())

    def update(self, loss: float, epoch: int, net: torch.nn.Module) -> bool:
        """Keep ``net``'s weights when ``loss`` is the lowest yet (True), else count one
        more epoch without improvement (False)."""
        if loss < self.loss:
            self.loss, self.epoch, self.bad_epochs = loss, epoch, 0
            self.state = copy.deepcopy(net.state_dict())
            return True
        self.bad_epochs += 1
        return False


def log_fit_done(name: str, report: FitReport, monitor: str) -> None:
    """The one summary line of a finished ``fit``."""
    log.info(
        "%s fit done: %d epochs (best %d, %s=%.4f) in %.1fs (%.2fs/epoch), "
        "%d train / %d val windows",
        name,
        report.epochs_run,
        report.best_epoch,
        monitor,
        report.best_val_loss,
        report.seconds,
        report.seconds_per_epoch,
        report.n_train_windows,
        report.n_val_windows,
    )
