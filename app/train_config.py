"""What a training run is told: one typed object for the CLI, the Python API and tests.

``python -m app.train`` parses its arguments into a ``TrainConfig``
(``TrainConfig.from_args``); ``app.api`` builds one from its own keys; everything below the
command line (``app.train.run`` and the functions it calls) reads only this object, never an
argparse namespace. The defaults here equal the CLI's (a test checks it).

Examples
--------
>>> TrainConfig(epochs=5, tiny=True).epochs
5
>>> TrainConfig(alarm_budget=2.0)
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for TrainConfig
alarm_budget
  Input should be less than or equal to 1 [type=less_than_equal, input_value=2.0, input_type=float]
    For further information visit https://errors.pydantic.dev/.../v/less_than_equal
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app import PROJECT_ROOT
from app.pipeline import (
    DEFAULT_EVENTS_PER_WEEK,
    DEFAULT_INJECT_COPIES,
    DEFAULT_N_INJECT,
    DEFAULT_TIES,
)
from app.postprocess.threshold import (
    DEFAULT_ALARM_BUDGET,
    DEFAULT_MAX_FLAGS_PER_DAY,
    Ties,
)


class TrainConfig(BaseModel):
    """Every option of a training run (the CLI's flags, by their long names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # what to train, where it goes
    detector: str = "all"  #: a detector name, ``all`` (each, then the ensemble) or ``ensemble``
    output_dir: Path = PROJECT_ROOT / "models"
    # the data (``app.cli_common.add_data_arguments``)
    data_path: Path = PROJECT_ROOT / "data" / "synthetic_transactions.csv"
    time_col: str = "timestamp"
    key_col: str | None = "combo"
    value_col: str = "count"
    label_col: str | None = "is_anomaly"
    split_col: str | None = "split"
    event_col: str | None = "event_id"
    freq: str = "auto"
    resample: str | None = None
    values: str | None = None  #: ``None``/``auto``: from the data
    train_frac: float = Field(0.70, gt=0.0, lt=1.0)
    val_frac: float = Field(0.15, ge=0.0, lt=1.0)
    combos: list[str] | None = None
    # the models (None: the model's default, fitted to the series' history)
    epochs: int | None = Field(None, ge=1)
    kl_warmup_epochs: int | None = Field(None, ge=0)
    window: int | None = Field(None, ge=2)
    vaegan_window: int | None = Field(None, ge=2)
    clean_k: float | None = None
    reference_weeks: int | None = Field(None, ge=0)
    daily_reference: bool = False
    log_transform: bool | None = None
    overrides: list[str] = Field(default_factory=list)  #: ``--set NAME=VALUE``
    tiny: bool = False
    # thresholds (validation only)
    n_inject: int = Field(DEFAULT_N_INJECT, ge=0)
    inject_copies: int = Field(DEFAULT_INJECT_COPIES, ge=1)
    events_per_week: float = Field(DEFAULT_EVENTS_PER_WEEK, ge=0.0)
    threshold_ties: Ties = DEFAULT_TIES
    alarm_budget: float = Field(DEFAULT_ALARM_BUDGET, ge=0.0, le=1.0)
    alarm_budget_per_day: float | None = Field(DEFAULT_MAX_FLAGS_PER_DAY, ge=0.0)
    # runtime
    seed: int = 42
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    no_progress: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        """The config of a parsed command line."""
        return cls.model_validate(vars(args))

    def with_changes(self, **changes: Any) -> TrainConfig:
        """A validated copy with some options changed."""
        return type(self).model_validate({**self.model_dump(), **changes})
