"""The detector contract, the template ``fit``, score details and the on-disk artifact format.

Every detector scores the **last point** of a window of raw hourly counts; **higher scores
mean more anomalous**. Detectors never decide (threshold) themselves: calibration and
thresholds live in ``app.postprocess`` and are stored by the caller through ``extra_meta``.
``FitReport`` (what one ``fit`` did) lives with the training loop in
``app.detectors.training`` and is re-exported here.

Artifact format (one directory per trained detector)
----------------------------------------------------
``meta.json``
    Sorted, indented JSON: ``schema_version``, ``detector``, ``versions`` (torch, numpy,
    python at save time) and whatever the detector and its caller add (params, normalisation
    statistics, seed, fit report, calibration, threshold, metrics).
``weights.pt``
    ``torch.save`` of a plain ``dict[str, state_dict]`` (one entry per sub-network): tensors
    only, loaded with ``torch.load(..., weights_only=True)``. No object is ever pickled.

Both files are written into a temporary directory beside the target, which then replaces the
target directory, so a reader sees either the old artifact or the new one, never a mix.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Self, TypeGuard

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError

from app.artifacts import META_FILE, WEIGHTS_FILE
from app.detectors.training import (
    FitReport,
    LoopPlan,
    WindowHooks,
    jsonable,
    log_fit_done,
    run_training,
    seeded_training,
)
from app.detectors.windows import expected_band, masked_windows, normalisation_stats
from app.errors import ArtifactError, ContractError, DataError, NotFittedError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: The training schedule of every detector's ``tiny_params``: seconds on a CPU (tests).
TINY_SCHEDULE: Mapping[str, Any] = MappingProxyType(
    {"batch_size": 64, "epochs": 12, "kl_warmup_epochs": 4, "patience": 4, "lr": 3e-3}
)
#: Rows per scoring chunk; every chunk (the last one padded) has exactly this many rows, so a
#: window scores the same bit for bit alone or in any batch.  128 rather than 512: a
#: stream's micro-batch brings a few hours per combo, and one window then costs 6 ms instead
#: of 27 ms (FCVAE) and 2.4 ms instead of 8.7 ms (VAE+GAN), for 7-8 % less peak throughput
#: (bench: chunk sweep; VAE+GAN scores were the same bit for bit at either size, 2,048 demo
#: windows, 2 threads, 2026-12-02).
SCORE_CHUNK = 128

StateDicts = dict[str, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ScoreDetails:
    """Per-window scoring output; every array has shape ``(n,)`` and dtype float64.

    Attributes
    ----------
    score
        Raw anomaly score of each window's last point; **higher = more anomalous**.
    expected
        The count the model expected for the last point, in raw units.
    expected_std
        Spread of that expectation in raw units (one "sigma" of the predictive distribution;
        for skewed bands it is ``(expected_high - expected_low) / (2 * band_sigmas)``).
    expected_low, expected_high
        A band around ``expected`` in raw units (never below 0).
    """

    score: NDArray[np.float64]
    expected: NDArray[np.float64]
    expected_std: NDArray[np.float64]
    expected_low: NDArray[np.float64]
    expected_high: NDArray[np.float64]


class Detector(ABC):
    """A window-scoring anomaly detector; **higher scores mean more anomalous**.

    Subclasses set ``name`` (also the ``detector`` field of their artifacts), implement
    ``fit``, ``score_details``, ``save``, ``load`` and ``tiny_params``, and expose the meta
    dict of a loaded artifact as ``meta``. Scoring before ``fit``/``load`` raises
    ``NotFittedError``. Scores depend only on the window, the model and the window's seed.
    """

    name: ClassVar[str]
    meta: dict[str, Any]

    @property
    @abstractmethod
    def is_fitted(self) -> bool:
        """True once ``fit`` or ``load`` has run."""

    @property
    @abstractmethod
    def window(self) -> int:
        """Window length W (hours) the detector scores."""

    @abstractmethod
    def fit(
        self,
        train: NDArray[np.float64],
        *,
        val: NDArray[np.float64] | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> FitReport:
        """Learn from a 1-D raw count series on a regular hourly grid (NaN = missing hour)."""

    @abstractmethod
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
            Each field float64 of shape ``(n,)``, ``expected*`` in counts (what the score
            and the band are: see the detector's ``score_details``).

        Raises
        ------
        NotFittedError
            Before ``fit``/``load``.
        ContractError
            Bad shapes, non-integer seeds, inf, a missing last point, or (with
            ``log_transform``) negative counts.
        """

    def score(self, windows: NDArray[np.float64], seeds: NDArray[np.int64]) -> NDArray[np.float64]:
        """Raw score of each window's last point, shape ``(n,)``; higher = more anomalous."""
        return self.score_details(windows, seeds).score

    @abstractmethod
    def save(self, directory: Path, extra_meta: dict[str, Any] | None = None) -> None:
        """Write the artifact to ``directory`` (atomically); ``extra_meta`` joins meta.json."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> Self:
        """Rebuild a fitted detector from ``directory``; its meta is ``.meta``."""

    @staticmethod
    @abstractmethod
    def tiny_params() -> BaseModel:
        """Parameters small enough to train in a few seconds (tests): ``TINY_SCHEDULE``
        and a small network."""


class PartsNetwork(torch.nn.Module):
    """A network made of named sub-networks, saved as one state dict per part.

    Subclasses list their sub-module attribute names in ``PARTS``; that is the
    ``weights.pt`` layout.
    """

    PARTS: ClassVar[tuple[str, ...]]

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """One state dict per sub-network (the ``weights.pt`` layout)."""
        return {name: getattr(self, name).state_dict() for name in self.PARTS}

    def load_state_dicts(self, state_dicts: dict[str, dict[str, torch.Tensor]]) -> None:
        """Inverse of ``state_dicts``; strict (every part and every key must match)."""
        missing = set(self.PARTS) - set(state_dicts)
        extra = set(state_dicts) - set(self.PARTS)
        if missing or extra:
            raise KeyError(f"weight parts differ: missing {sorted(missing)}, extra {sorted(extra)}")
        for name in self.PARTS:
            getattr(self, name).load_state_dict(state_dicts[name], strict=True)


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device asked for; CUDA only when it is there (never assumed)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available")
    return dev


def as_series(values: Any, what: str) -> NDArray[np.float64]:
    """A 1-D float64 series (NaN = missing hour); infinite values are refused."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"{what} must be a 1-D hourly series; got shape {arr.shape}")
    if np.isinf(arr).any():
        raise DataError(f"{what} holds infinite values at {np.flatnonzero(np.isinf(arr))[:5]}")
    return arr


class NetworkDetector(Detector):
    """Plumbing shared by the torch detectors: state, normalisation, the band, the template
    ``fit``, save and load.

    Subclasses set ``params_class`` (a pydantic model with ``window``, ``log_transform``,
    ``min_observed_share``, ``latent_dim`` and the schedule fields of ``LoopPlan``),
    ``reserved_meta_keys`` (the meta keys they write themselves) and ``hooks_class`` (their
    ``WindowHooks``), ``network_class`` with its ``network_args`` and ``loop_plan``, and
    implement ``_model_series``; ``extra_seeds`` and ``_after_fit`` add what they do after
    training.
    They extend ``_own_meta`` and ``_load_extra`` for what else their artifacts hold, and
    ``_upgrade_params`` for older artifacts' params.

    Parameters
    ----------
    params
        Hyperparameters (``params_class()`` when None).
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
    seed_
        The seed of the last ``fit`` (or of the loaded artifact).
    fit_report_
        The last ``FitReport`` (None after ``load``).
    """

    params_class: ClassVar[type[BaseModel]]
    reserved_meta_keys: ClassVar[frozenset[str]]
    hooks_class: ClassVar[type[WindowHooks[Any, Any]]]
    #: The network, and the ``params`` fields passed to it by name (``_build_network``).
    network_class: ClassVar[type[PartsNetwork]]
    network_args: ClassVar[tuple[str, ...]]
    #: ``LoopPlan`` fields beside the schedule: loss terms, monitored term, log and bar.
    loop_plan: ClassVar[Mapping[str, Any]]
    #: Further seeds ``fit`` derives for ``_after_fit`` (``TrainingRandomness.extra``).
    extra_seeds: ClassVar[int] = 0
    params: Any
    _net: Any

    def __init__(self, params: BaseModel | None = None, device: str = "cpu") -> None:
        self.params = params if params is not None else self.params_class()
        self.device = resolve_device(device)
        self.meta: dict[str, Any] = {}
        self.mean_: float | None = None
        self.std_: float | None = None
        self.seed_: int | None = None
        self.fit_report_: FitReport | None = None
        self._net = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(window={self.params.window}, device={str(self.device)!r}, "
            f"fitted={self.is_fitted})"
        )

    @property
    def is_fitted(self) -> bool:
        return self._net is not None

    @property
    def window(self) -> int:
        return int(self.params.window)

    @property
    def network(self) -> Any:
        """The trained network (raises ``NotFittedError`` before ``fit``/``load``)."""
        if self._net is None:
            raise NotFittedError(f"{self!r} is not fitted: call fit() or load() first")
        return self._net

    def _build_network(self) -> PartsNetwork:
        """A freshly initialised ``network_class`` with the ``network_args`` of ``params``."""
        return self.network_class(
            **{name: getattr(self.params, name) for name in self.network_args}
        )

    # --- training -----------------------------------------------------------------------------

    def fit(
        self,
        train: NDArray[np.float64],
        *,
        val: NDArray[np.float64] | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> FitReport:
        """Train on a raw hourly count series; early-stop on ``val`` when given.

        The detector maps both series to its model scale (``_model_series``: the log
        transform, FCVAE's reference); they are standardised with the training series'
        statistics and every window of ``params.window`` steps with at least
        ``params.min_observed_share`` present steps is cut from them.  The detector's
        ``hooks_class`` trains the network of ``_build_network`` through ``run_training`` on
        its ``_loop_plan``, then ``_after_fit`` runs (VAE+GAN: calibrating its components).
        The fitted state changes only once training succeeded.

        Parameters
        ----------
        train
            1-D raw counts on a regular hourly grid, NaN = missing hour. Normalisation
            statistics come from this series only.
        val
            Optional 1-D validation series (same grid rules; labelled hours already NaN).
            Its windows are cut within it (prepend the last ``W − 1`` training hours to
            validate on its first hours) and scored without augmentation; they drive early
            stopping on the plan's monitored term.  FCVAE with ``reference_weeks``: ``val``
            must follow ``train`` directly (its first weeks take their reference from
            train).  VAE+GAN then calibrates its components on ``val``'s windows whose last
            hour is present.  Without ``val``, all ``epochs`` run, the last weights are kept
            and VAE+GAN calibrates on the training windows (logged as a warning).
        seed
            Seeds weight initialisation, shuffling, augmentation, dropout and latent noise
            through private generators (the global torch RNG is restored afterwards), and
            the ``extra_seeds`` (VAE+GAN: the calibration windows' seeds).
        progress
            Show a tqdm progress bar over epochs.

        Returns
        -------
        FitReport
            ``history`` holds ``train_<term>``/``val_<term>`` for each loss term of the
            plan, plus ``kl_weight``, ``lr`` and ``epoch_seconds``; ``best_val_loss`` is the
            best value of the monitored validation term.

        Raises
        ------
        DataError
            The series is not 1-D, holds inf (or negative counts with ``log_transform``),
            has no present hour, is too short to give two training windows, or ``val``
            gives no window.
        """
        started = time.perf_counter()
        p = self.params
        train_arr = as_series(train, "train")
        val_arr = None if val is None else as_series(val, "val")
        train_model, val_model = self._model_series(train_arr, val_arr)
        mean, std = normalisation_stats(train_model)
        x_train, ok_train = masked_windows(
            (train_model - mean) / std, p.window, p.min_observed_share, "train"
        )
        if x_train.shape[0] < 2:
            raise DataError(
                f"train gives {x_train.shape[0]} usable windows of {p.window} steps; need >= 2 "
                f"(series length {train_arr.shape[0]}, min_observed_share "
                f"{p.min_observed_share})"
            )
        x_val: NDArray[np.float32] | None = None
        ok_val: NDArray[np.bool_] | None = None
        if val_model is not None:
            x_val, ok_val = masked_windows(
                (val_model - mean) / std, p.window, p.min_observed_share, "val"
            )
            if x_val.shape[0] == 0:
                raise DataError("val gives no usable window; pass a longer validation series")
        plan = self._loop_plan()

        with seeded_training(seed, self.device, n_extra=self.extra_seeds) as rng:
            net = self._build_network().to(self.device)
            hooks = self.hooks_class(net, p, self.device, rng.aug, rng.noise, x_train, ok_train)
            hooks.set_validation(x_val, ok_val)
            report = run_training(
                net,
                hooks,
                plan,
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
        self.fit_report_ = report
        self._after_fit(train_arr, val_arr, rng.extra)
        report.seconds = time.perf_counter() - started
        self.meta = self._own_meta()
        log_fit_done(self.name, report, "val_" + plan.monitor)
        return report

    @abstractmethod
    def _model_series(
        self, train: NDArray[np.float64], val: NDArray[np.float64] | None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """The checked raw series on the model's scale, before standardisation (NaN kept)."""

    def _loop_plan(self) -> LoopPlan:
        """The schedule of ``params`` and the detector's ``loop_plan`` (named loss terms,
        the monitored term, ...) that ``run_training`` follows."""
        return LoopPlan.from_params(self.name, self.params, **self.loop_plan)

    def _after_fit(
        self, train: NDArray[np.float64], val: NDArray[np.float64] | None, seeds: tuple[int, ...]
    ) -> None:
        """What the detector does with the trained network before ``fit`` returns, given the
        checked raw series and the fit's ``extra_seeds`` further seeds (default: nothing)."""

    # --- transforms ---------------------------------------------------------------------------

    def _transform(self, values: NDArray[np.float64], what: str) -> NDArray[np.float64]:
        if not self.params.log_transform:
            return values
        if (values < 0).any():
            bad = np.flatnonzero(values < 0)[:5]
            raise DataError(f"{what} has negative counts at {bad.tolist()}; log1p needs >= 0")
        return np.log1p(values)

    def _normalise(self, values: NDArray[np.float64], what: str) -> NDArray[np.float64]:
        """Raw counts → standardised model units (NaN kept)."""
        assert self.mean_ is not None and self.std_ is not None
        return (self._transform(values, what) - self.mean_) / self.std_

    def _to_counts(self, units: NDArray[np.float64]) -> NDArray[np.float64]:
        """Standardised model units → raw counts."""
        assert self.mean_ is not None and self.std_ is not None
        out = units * self.std_ + self.mean_
        return np.expm1(out) if self.params.log_transform else out

    def _details(
        self,
        score: NDArray[np.float64],
        centre: NDArray[np.float64],
        spread: NDArray[np.float64],
    ) -> ScoreDetails:
        """Scores plus the expected value and band of a centre ± spread in model units."""
        assert self.mean_ is not None and self.std_ is not None
        expected, expected_std, low, high = expected_band(
            centre,
            spread,
            mean=self.mean_,
            std=self.std_,
            log_transform=bool(self.params.log_transform),
            sigmas=float(self.params.band_sigmas),
        )
        return ScoreDetails(
            score=score.astype(np.float64),
            expected=expected,
            expected_std=expected_std,
            expected_low=low,
            expected_high=high,
        )

    # --- persistence --------------------------------------------------------------------------

    def _own_meta(self) -> dict[str, Any]:
        """The meta keys the detector writes itself (a subset of ``reserved_meta_keys``)."""
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

    def save(self, directory: Path, extra_meta: dict[str, Any] | None = None) -> None:
        """Write ``meta.json`` + ``weights.pt`` to ``directory`` atomically.

        ``extra_meta`` (threshold, calibration, training span, metrics…) is merged into
        ``meta.json``; it may not override the detector's own keys. Keys a loaded artifact
        carried from its caller are kept unless ``extra_meta`` replaces them.

        Raises
        ------
        NotFittedError
            Before ``fit``/``load``.
        ArtifactError
            ``extra_meta`` overrides a reserved key, is not JSON-serialisable, or the write
            failed.
        """
        net = self.network
        extra = dict(extra_meta or {})
        clash = sorted(self.reserved_meta_keys & set(extra))
        if clash:
            raise ArtifactError(f"extra_meta may not override the detector's keys {clash}")
        own = self._own_meta()
        if self.fit_report_ is None and "fit" in self.meta:
            own["fit"] = self.meta["fit"]  # a loaded artifact keeps its training record
        carried = {k: v for k, v in self.meta.items() if k not in self.reserved_meta_keys}
        directory = Path(directory)
        write_artifact(directory, {**carried, **own, **extra}, net.state_dicts())
        self.meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))

    @classmethod
    def _upgrade_params(cls, raw: Any) -> Any:
        """Params of an older artifact made current (default: as they are)."""
        return raw

    def _load_extra(self, meta: dict[str, Any], directory: Path) -> None:
        """Read what else the detector's artifact holds (raise ``ArtifactError`` if bad)."""

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> Self:
        """Rebuild a fitted detector from ``directory`` (see the module docstring).

        Raises
        ------
        ArtifactError
            Missing/corrupt files, another detector's or schema's artifact, invalid params
            or normalisation (or what ``_load_extra`` checks), or weights that do not match
            the params.
        """
        meta, state_dicts = read_artifact(Path(directory), cls.name, device=device)
        try:
            params = cls.params_class.model_validate(cls._upgrade_params(meta.get("params")))
        except ValidationError as exc:
            raise ArtifactError(f"{directory}/{META_FILE} has invalid params: {exc}") from exc
        norm = meta.get("normalisation") or {}
        mean, std = norm.get("mean"), norm.get("std")
        if not (is_finite_number(mean) and is_finite_number(std) and std > 0):
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
        detector._load_extra(meta, Path(directory))
        detector._net = net.eval()
        detector.mean_, detector.std_ = float(mean), float(std)
        seed = meta.get("seed")
        detector.seed_ = int(seed) if isinstance(seed, int) else None
        detector.meta = meta
        return detector


def is_finite_number(value: Any) -> TypeGuard[float]:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_windows(
    windows: NDArray[np.float64] | Any, seeds: NDArray[np.int64] | Any, window: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Check the scoring inputs and return them as float64 ``(n, W)`` and int64 ``(n,)``.

    Raises
    ------
    ContractError
        Wrong shapes, a non-integer seed array, an infinite value, or a window whose last
        point is missing (the caller must not ask to score a missing hour).

    Examples
    --------
    >>> w, s = validate_windows([[1.0, float("nan"), 3.0]], [7], window=3)
    >>> w.shape, s.dtype.name
    ((1, 3), 'int64')
    """
    arr = np.asarray(windows, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != window:
        raise ContractError(f"windows must have shape (n, {window}); got {arr.shape}")
    seed_arr = np.asarray(seeds)
    if seed_arr.shape != (arr.shape[0],):
        raise ContractError(
            f"seeds must have shape ({arr.shape[0]},) (one per window); got {seed_arr.shape}"
        )
    if seed_arr.size and seed_arr.dtype.kind not in "iu":
        raise ContractError(f"seeds must be integers; got dtype {seed_arr.dtype}")
    if np.isinf(arr).any():
        bad = int(np.argwhere(np.isinf(arr))[0][0])
        raise ContractError(f"window {bad} holds an infinite value: {arr[bad].tolist()}")
    if arr.shape[0] and np.isnan(arr[:, -1]).any():
        bad = int(np.flatnonzero(np.isnan(arr[:, -1]))[0])
        raise ContractError(
            f"window {bad} has a missing last point; only present hours can be scored"
        )
    return arr, seed_arr.astype(np.int64, copy=False)


def library_versions() -> dict[str, str]:
    """Versions recorded in every artifact."""
    return {
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_artifact(directory: Path, meta: dict[str, Any], state_dicts: StateDicts) -> None:
    """Write ``meta.json`` and ``weights.pt`` into ``directory``, atomically.

    ``meta`` gets ``schema_version``, ``detector`` (must already be in ``meta``) and
    ``versions`` added or checked; non-finite floats are written as ``null``. The files go to
    a temporary directory beside ``directory``, which then replaces ``directory`` as a whole
    (the directory holds only the artifact).

    Raises
    ------
    ArtifactError
        ``meta`` has no ``detector`` name, is not JSON-serialisable, or the write failed.
    """
    directory = Path(directory)
    if not isinstance(meta.get("detector"), str):
        raise ArtifactError(f"meta must name its detector; got detector={meta.get('detector')!r}")
    full = {**meta, "schema_version": SCHEMA_VERSION, "versions": library_versions()}
    try:
        text = json.dumps(jsonable(full), sort_keys=True, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"meta for {directory} is not JSON-serialisable: {exc}") from exc
    weights = {
        str(part): {str(k): v.detach().cpu().clone() for k, v in sd.items()}
        for part, sd in state_dicts.items()
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    old: Path | None = None
    try:
        (tmp / META_FILE).write_text(text, encoding="utf-8")
        torch.save(weights, tmp / WEIGHTS_FILE)
        for name in (META_FILE, WEIGHTS_FILE):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            old.rmdir()
            os.replace(directory, old)
        os.replace(tmp, directory)
    except (OSError, RuntimeError) as exc:
        if old is not None and not directory.exists():
            os.replace(old, directory)  # put the previous artifact back
            old = None
        raise ArtifactError(f"could not write the artifact to {directory}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    log.info("wrote %s artifact to %s", meta["detector"], directory)


def read_artifact(
    directory: Path, expected_detector: str, *, device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], StateDicts]:
    """Read and check an artifact written by ``write_artifact``.

    Returns
    -------
    (meta, state_dicts)
        The parsed ``meta.json`` and the state dicts, mapped to ``device``.

    Raises
    ------
    ArtifactError
        The directory or a file is missing, ``meta.json`` is not valid JSON (or not an
        object), the schema version or detector name differs, or the weights cannot be read.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"artifact directory {directory} does not exist (train first?)")
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: the artifact in {directory} is incomplete")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path} must hold a JSON object; got {type(meta).__name__}")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{meta_path} has schema_version {version!r}; this code reads {SCHEMA_VERSION} "
            "(retrain, or use the code version that wrote it)"
        )
    if meta.get("detector") != expected_detector:
        raise ArtifactError(
            f"{directory} holds a {meta.get('detector')!r} artifact, not {expected_detector!r}"
        )
    saved_torch = (meta.get("versions") or {}).get("torch")
    if saved_torch != torch.__version__:
        log.warning(
            "artifact %s was saved with torch %s; running torch %s (scores may differ slightly)",
            directory,
            saved_torch,
            torch.__version__,
        )
    try:
        weights = torch.load(weights_path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        raise ArtifactError(f"{weights_path} cannot be loaded as state dicts: {exc}") from exc
    if not isinstance(weights, dict) or not all(
        isinstance(sd, dict) and all(isinstance(t, torch.Tensor) for t in sd.values())
        for sd in weights.values()
    ):
        raise ArtifactError(f"{weights_path} must hold a dict of state dicts (name -> tensors)")
    return meta, weights
