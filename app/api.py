"""A small Python API for notebooks: configure, set up (load data, train or load models),
execute (score the test split and return the metrics).

Examples
--------
>>> from app.api import AnomalyDetectionSystem
>>> system = AnomalyDetectionSystem({"model_dir": "models"})   # the shipped models
>>> system.config.train
False
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from app import PROJECT_ROOT
from app.catalog import ENSEMBLE, detector_names
from app.errors import AnomalyError
from app.train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class SystemConfig:
    """What the system runs on; every field has a sensible default.

    ``train=False`` loads the models under ``model_dir``; ``train=True`` trains the
    ``detectors`` (``["fcvae", "vaegan"]`` also fits the ensemble) into ``model_dir``.
    ``tiny=True`` trains small networks in seconds (smoke tests, demos).
    """

    data_path: Path = PROJECT_ROOT / "data" / "synthetic_transactions.csv"
    model_dir: Path = PROJECT_ROOT / "models"
    train: bool = False
    detectors: list[str] = field(default_factory=lambda: list(detector_names()))
    combos: list[str] | None = None
    epochs: int | None = None
    tiny: bool = False
    seed: int = 42
    decision: str = ENSEMBLE
    time_col: str = "timestamp"
    key_col: str = "combo"
    value_col: str = "count"
    label_col: str = "is_anomaly"
    split_col: str = "split"
    event_col: str = "event_id"
    freq: str = "auto"
    resample: str | None = None
    values: str = "auto"  # counts | real | auto (from the data)
    train_frac: float = 0.70
    val_frac: float = 0.15
    threads: int | None = None

    @classmethod
    def from_any(cls, config: SystemConfig | dict[str, Any] | None) -> SystemConfig:
        if config is None:
            return cls()
        if isinstance(config, SystemConfig):
            return config
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        values = dict(config)
        for key in ("data_path", "model_dir"):
            if key in values:
                values[key] = Path(values[key])
        return cls(**values)

    def as_train_config(self) -> TrainConfig:
        """The training run the CLIs would make of these keys (options the API does not
        name keep the CLI's defaults), so the API and the CLIs share one code path."""
        return TrainConfig(
            data_path=self.data_path,
            time_col=self.time_col,
            key_col=self.key_col,
            value_col=self.value_col,
            label_col=self.label_col,
            split_col=self.split_col,
            event_col=self.event_col,
            freq=self.freq,
            resample=self.resample,
            values=self.values,
            train_frac=self.train_frac,
            val_frac=self.val_frac,
            combos=self.combos,
            epochs=self.epochs,
            tiny=self.tiny,
            threads=self.threads,
            seed=self.seed,
            no_progress=True,
            output_dir=self.model_dir,
            detector="all" if set(self.detectors) == set(detector_names()) else self.detectors[0],
        )


class AnomalyDetectionSystem:
    """``setup()`` then ``execute()``; see the module docstring."""

    def __init__(self, config: SystemConfig | dict[str, Any] | None = None) -> None:
        self.config = SystemConfig.from_any(config)
        self.frame: pd.DataFrame | None = None
        self.scores: pd.DataFrame | None = None

    def setup(self) -> AnomalyDetectionSystem:
        """Load the data; train the models when ``config.train``; check they load."""
        from app.cli_common import load_from_args
        from app.registry import ModelRegistry

        config = self.config.as_train_config()
        self.frame = load_from_args(config)
        if self.config.train:
            from app.train import run

            root = self.config.model_dir
            run(config, list(self.config.detectors), {d: root / d for d in self.config.detectors})
        ModelRegistry(self.config.model_dir, detector=self.config.decision).check()
        return self

    def execute(self) -> dict[str, Any]:
        """Score the test split (thresholds from validation) and return the metrics:
        ``{detector: {"per_combo": {...}, "overall": {...}}}`` as ``app.evaluate`` writes."""
        from app.evaluate import evaluate

        if self.frame is None:
            raise AnomalyError("call setup() before execute()")
        metrics, self.scores = evaluate(
            self.frame, self.config.model_dir, detector=self.config.decision, seed=self.config.seed
        )
        return metrics
