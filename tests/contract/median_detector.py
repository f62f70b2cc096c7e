"""A test-only third detector: the seasonal median (no network, numpy only).

It scores the last point of a window by how far it lies from the same time of day on the
previous days the window holds (``period`` steps apart, each moved by the recent
day-over-day drift; their median), in units of a robust scale learnt from the training
series. It exists to prove the detector contract
(``app.detectors.base.Detector``): registered at test time in ``app.catalog``, it goes
through training, calibration, the artifact format, the registry, the offline and stream
scorers and the evaluation without any ``app/`` module knowing its name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.artifacts import META_FILE
from app.detectors.base import (
    Detector,
    FitReport,
    ScoreDetails,
    as_series,
    is_finite_number,
    read_artifact,
    validate_windows,
    write_artifact,
)
from app.detectors.windows import MAD_TO_SIGMA
from app.errors import ArtifactError, ContractError, DataError, NotFittedError

#: The meta keys the detector writes itself (the rest is its caller's, kept on re-save).
OWN_META = frozenset({"detector", "params", "scale", "seed", "fit"})


class MedianParams(BaseModel):
    """The seasonal median's parameters (the fields ``app.pipeline.fit_to_history`` may
    set: ``window``, ``log_transform``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(7 * 24 + 1, ge=2, description="window W (steps); the last is scored")
    period: int = Field(24, ge=1, description="steps between the points the median takes")
    log_transform: bool = Field(True, description="residuals of log1p(counts)")
    band_sigmas: float = Field(3.0, gt=0.0, description="half-width of the expected band")


class MedianDetector(Detector):
    """``score = |m(last) − reference| / scale`` (``_reference``) with ``m`` = log1p
    (``log_transform``) or the identity; higher = more anomalous. Deterministic: the
    window seeds are checked, never drawn from."""

    name: ClassVar[str] = "median"

    def __init__(self, params: MedianParams | None = None, device: str = "cpu") -> None:
        self.params = params if params is not None else MedianParams()
        self.device = device
        self.meta: dict[str, Any] = {}
        self.scale_: float | None = None
        self.seed_: int | None = None
        self.fit_report_: FitReport | None = None

    @property
    def is_fitted(self) -> bool:
        return self.scale_ is not None

    @property
    def window(self) -> int:
        return int(self.params.window)

    @staticmethod
    def tiny_params() -> MedianParams:
        return MedianParams(window=3 * 24 + 1)

    # --- the model ----------------------------------------------------------------------------

    def _to_model(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.log1p(values) if self.params.log_transform else values

    def _from_model(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.expm1(values) if self.params.log_transform else values

    def _reference(self, model: NDArray[np.float64]) -> NDArray[np.float64]:
        """Each window's expected last point (model scale): the median over the earlier
        periods ``j`` of ``m[last − j·period] + j·drift``, the drift being the median
        period-over-period change of the steps just before the last (0 where the window
        holds fewer than two periods); the median of its earlier points where no period
        is present, the last point itself where no earlier point is."""
        w, period = self.window, int(self.params.period)
        last = w - 1
        js = [j for j in range(1, w) if j * period <= last]
        drift = np.zeros(model.shape[0])
        if w >= 2 * period:
            recent = np.arange(last - period + 1, last)
            change = _row_nanmedian(model[:, recent] - model[:, recent - period])
            drift = np.where(np.isnan(change), 0.0, change)
        ref = np.full(model.shape[0], np.nan)
        if js:
            ref = _row_nanmedian(
                np.stack([model[:, last - j * period] + j * drift for j in js], axis=1)
            )
        ref = np.where(np.isnan(ref), _row_nanmedian(model[:, :-1]), ref)
        return np.where(np.isnan(ref), model[:, -1], ref)

    def _residuals(self, series: NDArray[np.float64]) -> NDArray[np.float64]:
        """Last point minus reference (model scale) of every window ending at a present step."""
        views = np.lib.stride_tricks.sliding_window_view(self._to_model(series), self.window)
        views = views[~np.isnan(views[:, -1])]
        return views[:, -1] - self._reference(views)

    def _check_series(self, values: Any, what: str) -> NDArray[np.float64]:
        arr = as_series(values, what)
        if self.params.log_transform and (arr < 0).any():
            raise DataError(f"{what} holds negative counts; log_transform needs counts >= 0")
        return arr

    # --- the contract -------------------------------------------------------------------------

    def fit(
        self,
        train: NDArray[np.float64],
        *,
        val: NDArray[np.float64] | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> FitReport:
        """Learn the robust scale (1.4826 · MAD) of the training windows' residuals."""
        started = time.perf_counter()
        train_arr = self._check_series(train, "train")
        if train_arr.shape[0] < self.window:
            raise DataError(
                f"train has {train_arr.shape[0]} steps; need at least window={self.window}"
            )
        res = self._residuals(train_arr)
        if res.size < 2:
            raise DataError(f"train gives {res.size} usable windows of {self.window}; need >= 2")
        mad = float(np.median(np.abs(res - np.median(res))))
        scale = MAD_TO_SIGMA * mad if mad > 0 else float(np.std(res)) or 1.0
        val_res = None
        if val is not None:
            val_arr = self._check_series(val, "val")
            val_res = self._residuals(val_arr) if val_arr.shape[0] >= self.window else None
            if val_res is None or val_res.size == 0:
                raise DataError(f"val gives no scorable window of {self.window} steps")
        train_loss = float(np.mean(np.abs(res))) / scale
        val_loss = float(np.mean(np.abs(val_res))) / scale if val_res is not None else np.nan
        history = {"train_loss": [train_loss]}
        if val_res is not None:
            history["val_loss"] = [val_loss]
        report = FitReport(
            epochs_run=1,
            best_epoch=1,
            best_val_loss=val_loss,
            history=history,
            seconds=time.perf_counter() - started,
            n_train_windows=int(res.size),
            n_val_windows=0 if val_res is None else int(val_res.size),
        )
        self.scale_, self.seed_, self.fit_report_ = scale, int(seed), report
        self.meta = self._own_meta()
        return report

    def score_details(self, windows: NDArray[np.float64], seeds: NDArray[np.int64]) -> ScoreDetails:
        if self.scale_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load()")
        arr, _ = validate_windows(windows, seeds, self.window)
        if self.params.log_transform and (arr < 0).any():
            raise ContractError("windows hold negative counts; log_transform needs counts >= 0")
        model = self._to_model(arr)
        ref = self._reference(model)
        k, scale = float(self.params.band_sigmas), self.scale_
        expected = self._from_model(ref)
        low = self._from_model(ref - k * scale)
        high = self._from_model(ref + k * scale)
        if self.params.log_transform:  # counts: never below 0
            expected, low = np.maximum(expected, 0.0), np.maximum(low, 0.0)
        return ScoreDetails(
            score=np.abs(model[:, -1] - ref) / scale,
            expected=expected.astype(np.float64),
            expected_std=((high - low) / (2 * k)).astype(np.float64),
            expected_low=low.astype(np.float64),
            expected_high=high.astype(np.float64),
        )

    def _own_meta(self) -> dict[str, Any]:
        report = self.fit_report_
        return {
            "detector": self.name,
            "params": self.params.model_dump(),
            "scale": self.scale_,
            "seed": self.seed_,
            "fit": None if report is None else report.to_dict(),
        }

    def save(self, directory: Path, extra_meta: dict[str, Any] | None = None) -> None:
        """``meta.json`` holds everything (params, scale); ``weights.pt`` no state dict."""
        if self.scale_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: nothing to save")
        carried = {k: v for k, v in self.meta.items() if k not in OWN_META}
        own = self._own_meta()
        if own["fit"] is None:  # loaded, not refitted: keep the recorded fit
            own["fit"] = self.meta.get("fit")
        write_artifact(Path(directory), {**carried, **own, **(extra_meta or {})}, {})
        self.meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> Self:
        meta, weights = read_artifact(Path(directory), cls.name, device=device)
        if weights:
            raise ArtifactError(f"{directory} holds weights {sorted(weights)}; a median has none")
        try:
            params = MedianParams.model_validate(meta.get("params"))
        except ValidationError as exc:
            raise ArtifactError(f"{directory}/{META_FILE} has invalid params: {exc}") from exc
        scale = meta.get("scale")
        if not (is_finite_number(scale) and scale > 0):
            raise ArtifactError(f"{directory}/{META_FILE} has invalid scale {scale!r}")
        detector = cls(params, device=device)
        detector.scale_ = float(scale)
        seed = meta.get("seed")
        detector.seed_ = int(seed) if isinstance(seed, int) else None
        detector.meta = meta
        return detector


def _row_nanmedian(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """The median of each row's present values; NaN (and no warning) for an empty row."""
    out = np.full(values.shape[0], np.nan)
    some = ~np.isnan(values).all(axis=1) if values.shape[1] else np.zeros(len(out), bool)
    if some.any():
        out[some] = np.nanmedian(values[some], axis=1)
    return out
