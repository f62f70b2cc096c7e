"""The shared training loop and window maths (app.detectors.training, app.detectors.windows)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from app.detectors import base
from app.detectors.training import (
    FitReport,
    LoopPlan,
    TrainingHooks,
    TrainingRandomness,
    WindowHooks,
    run_training,
    seeded_training,
)
from app.detectors.windows import (
    expected_band,
    masked_windows,
    normalisation_stats,
    scorable_windows,
)
from app.errors import DataError


class _Toy(TrainingHooks):
    """A one-weight "network" whose validation loss follows a script, epoch by epoch."""

    def __init__(
        self, net: torch.nn.Linear, val_losses: list[float] | None, train_loss: float = 1.0
    ) -> None:
        self.net, self.val_losses, self.train_loss = net, val_losses, train_loss
        self.epoch = -1
        self.steps = 0
        self.ended = 0

    def kl_weight(self, epoch: int) -> float:
        self.epoch = epoch
        return min(1.0, epoch / 2)

    def learning_rate(self) -> float:
        return 0.1

    def train_step(self, rows: Tensor, kl_weight: float) -> tuple[Mapping[str, Tensor], int]:
        self.steps += 1
        with torch.no_grad():
            self.net.weight.fill_(float(self.epoch + 1))  # weights say which epoch they are
        return {"loss": torch.tensor(self.train_loss)}, 2 * rows.shape[0]

    def end_epoch(self) -> None:
        self.ended += 1

    def eval_terms(self, kl_weight: float) -> dict[str, float] | None:
        if self.val_losses is None:
            return None
        return {"loss": self.val_losses[self.epoch]}


def _plan(**overrides: object) -> LoopPlan:
    base: dict[str, object] = dict(
        name="toy",
        epochs=8,
        batch_size=4,
        kl_warmup_epochs=2,
        patience=2,
        terms=("loss",),
        monitor="loss",
    )
    return LoopPlan(**{**base, **overrides})  # type: ignore[arg-type]


def _run(hooks: _Toy, plan: LoopPlan, n: int = 10):
    return run_training(
        hooks.net,
        hooks,
        plan,
        n_windows=n,
        n_val_windows=3,
        rng=TrainingRandomness(*(torch.Generator().manual_seed(0) for _ in range(3))),
        device=torch.device("cpu"),
        progress=False,
    )


def test_early_stopping_keeps_the_best_epoch_after_warm_up() -> None:
    # Epoch 0 is the lowest, but it is inside the KL warm-up: tracking starts at epoch 2.
    losses = [0.1, 0.2, 0.5, 0.4, 0.45, 0.6, 0.3, 0.2]
    hooks = _Toy(torch.nn.Linear(1, 1, bias=False), losses)
    report = _run(hooks, _plan())
    assert report.best_epoch == 4 and report.best_val_loss == 0.4
    assert report.epochs_run == 6 and report.stopped_early  # two epochs without a better loss
    assert float(hooks.net.weight.detach()) == 4.0  # the best epoch's weights are back
    assert hooks.steps == 6 * 3 and hooks.ended == 6  # ceil(10 / 4) batches per epoch
    assert report.history["val_loss"] == losses[:6]
    assert report.history["kl_weight"][:3] == [0.0, 0.5, 1.0]
    assert report.n_train_windows == 10 and report.n_val_windows == 3


def test_train_terms_are_weighted_by_what_each_step_says_it_averaged() -> None:
    hooks = _Toy(torch.nn.Linear(1, 1, bias=False), None, train_loss=2.5)
    report = _run(hooks, _plan(epochs=3))
    assert report.history["train_loss"] == [2.5, 2.5, 2.5]
    assert all(math.isnan(v) for v in report.history["val_loss"])


def test_without_validation_the_last_epoch_is_kept() -> None:
    hooks = _Toy(torch.nn.Linear(1, 1, bias=False), None)
    report = _run(hooks, _plan(epochs=5))
    assert report.epochs_run == report.best_epoch == 5 and not report.stopped_early
    assert math.isnan(report.best_val_loss) and float(hooks.net.weight.detach()) == 5.0


def test_divergence_stops_with_a_clear_error_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    hooks = _Toy(torch.nn.Linear(1, 1, bias=False), None, train_loss=math.inf)
    with pytest.raises(DataError, match="toy training diverged at epoch 1"):
        _run(hooks, _plan(stop_on_divergence=True))
    with caplog.at_level(logging.INFO, logger="app.detectors.training"):
        report = _run(_Toy(torch.nn.Linear(1, 1, bias=False), None, math.inf), _plan(epochs=2))
    assert report.epochs_run == 2 and "toy epoch 2/2 train_loss=inf" in caplog.text


def test_seeded_training_is_private_and_repeatable() -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    with seeded_training(7, torch.device("cpu"), n_extra=2) as rng:
        init = torch.rand(2)
        drawn = torch.randperm(5, generator=rng.shuffle)
    assert torch.equal(torch.rand(3), before)  # the global RNG is as it was
    with seeded_training(7, torch.device("cpu"), n_extra=2) as again:
        assert torch.equal(torch.rand(2), init)
        assert torch.equal(torch.randperm(5, generator=again.shuffle), drawn)
    assert len(rng.extra) == 2 and rng.extra == again.extra


class _Windows(WindowHooks[torch.nn.Linear, Any]):
    """The least a window detector's hooks add: two noise draws, a schedule."""

    VAL_NOISE = 2

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        optimiser = torch.optim.SGD(self.net.parameters(), lr=0.5)
        self.schedules = [torch.optim.lr_scheduler.StepLR(optimiser, step_size=1, gamma=0.1)]

    def kl_weight(self, epoch: int) -> float:
        return 1.0

    def train_step(self, rows: Tensor, kl_weight: float) -> tuple[Mapping[str, Tensor], int]:
        return {"loss": self.xt[rows].sum()}, rows.shape[0]

    def eval_terms(self, kl_weight: float) -> dict[str, float] | None:
        return None


def test_window_hooks_hold_the_windows_and_draw_validation_noise_in_order() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    ok = x > 2
    aug, noise = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    params = SimpleNamespace(latent_dim=5)
    hooks = _Windows(torch.nn.Linear(3, 1), params, torch.device("cpu"), aug, noise, x, ok)
    assert hooks.p is params and hooks.aug is aug and hooks.noise is noise
    assert torch.equal(hooks.xt, torch.from_numpy(x))
    assert torch.equal(hooks.okt, torch.from_numpy(ok))
    hooks.set_validation(None, None)
    assert hooks.val is None
    hooks.set_validation(x[:2], ok[:2])
    assert hooks.val is not None and len(hooks.val) == 2 + _Windows.VAL_NOISE
    val_x, val_ok, eps, prior = hooks.val
    assert torch.equal(val_x, torch.from_numpy(x[:2]))
    assert torch.equal(val_ok, torch.from_numpy(ok[:2]))
    same = torch.Generator().manual_seed(2)  # drawn once, from noise, in order: eps then prior
    assert torch.equal(eps, torch.randn(2, 5, generator=same))
    assert torch.equal(prior, torch.randn(2, 5, generator=same))
    assert hooks.learning_rate() == 0.5
    hooks.schedules[0].optimizer.step()  # an epoch's steps (no gradients: nothing moves)
    hooks.end_epoch()
    assert hooks.learning_rate() == pytest.approx(0.05)


def test_fit_report_is_also_the_contract_s() -> None:
    assert base.FitReport is FitReport
    report = FitReport(epochs_run=2, best_epoch=2, best_val_loss=math.nan, history={"a": [1.0]})
    assert report.to_dict()["best_val_loss"] is None and report.seconds_per_epoch == 0.0


def test_window_cutting_keeps_windows_with_enough_present_steps() -> None:
    series = np.array([1.0, np.nan, np.nan, np.nan, 5.0, 6.0])
    values, mask = masked_windows(series, 3, 0.3, "train")  # the all-missing window goes
    assert values.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 5.0, 6.0]]
    assert mask.tolist() == [[True, False, False], [False, False, True], [False, True, True]]
    assert values.dtype == np.float32 and values.flags.c_contiguous
    assert masked_windows(series, 3, 0.5, "train")[0].tolist() == [[0.0, 5.0, 6.0]]
    with pytest.raises(DataError, match="val has 2 steps; need at least window=3"):
        masked_windows(series[:2], 3, 0.5, "val")
    scorable = scorable_windows(series, 3, 0.3)  # the last step present, raw values kept
    assert np.array_equal(scorable, [[np.nan, np.nan, 5.0], [np.nan, 5.0, 6.0]], equal_nan=True)
    assert scorable_windows(series, 3, 0.5).shape == (1, 3)
    assert scorable_windows(series[:2], 3, 0.5).shape == (0, 3)


def test_normalisation_stats_guard_constant_and_empty_series() -> None:
    assert normalisation_stats(np.array([4.0, 4.0, np.nan])) == (4.0, 1.0)
    with pytest.raises(DataError, match="val has 1 present steps"):
        normalisation_stats(np.array([np.nan, 1.0]), "val")


def test_expected_band_is_symmetric_in_counts_and_skewed_in_logs() -> None:
    centre, spread = np.array([0.0, 1.0]), np.array([0.5, 0.5])
    e, sd, lo, hi = expected_band(centre, spread, mean=1.0, std=2.0, log_transform=False, sigmas=2)
    assert e.tolist() == [1.0, 3.0] and sd.tolist() == [1.0, 1.0]
    assert lo.tolist() == [0.0, 1.0] and hi.tolist() == [3.0, 5.0]  # never below 0
    e, sd, lo, hi = expected_band(centre, spread, mean=1.0, std=2.0, log_transform=True, sigmas=2)
    assert np.allclose(e, np.expm1([1.0, 3.0])) and np.all(hi - e > e - lo)
    assert np.allclose(sd, (hi - lo) / 4)
