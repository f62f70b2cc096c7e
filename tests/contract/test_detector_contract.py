"""One conformance suite run against every ``Detector`` registered in ``app.catalog``.

Each detector is trained once per module with its ``tiny_params()`` on a seasonal hourly
series; the held-out part carries injected spikes. Checks: finite scores of the right shape,
``NotFittedError`` before fitting, identical scores after save → load, identical results for
the same seed, batch independence, and a minimum ROC-AUC on the injected spikes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app import catalog
from app.detectors.base import Detector, ScoreDetails
from app.errors import ArtifactError, NotFittedError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DETECTORS: list[type[Detector]] = [spec.detector_class() for spec in catalog.DETECTORS.values()]

TRAIN_HOURS = 24 * 28
VAL_HOURS = 24 * 7
TEST_HOURS = 24 * 14
MIN_SPIKE_AUC = 0.9


def _seasonal(n_hours: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_hours)
    return (
        800.0
        + 250.0 * np.sin(2 * np.pi * t / 24)
        + 60.0 * np.cos(4 * np.pi * t / 24)
        + 100.0 * np.sin(2 * np.pi * t / 168)
        + rng.normal(0.0, 12.0, n_hours)
    )


def _roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann–Whitney ROC-AUC (ties count one half)."""
    pos, neg = scores[labels], scores[~labels]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


class Data:
    """The series, its splits and the scored test windows."""

    def __init__(self, window: int) -> None:
        self.window = window
        values = _seasonal(TRAIN_HOURS + VAL_HOURS + TEST_HOURS, seed=21)
        start = TRAIN_HOURS + VAL_HOURS
        self.spikes = np.arange(start + 20, start + TEST_HOURS, 31)
        values[self.spikes] += np.where(np.arange(self.spikes.size) % 2, 300.0, 450.0)
        values[[50, 51, 300]] = np.nan  # a few missing training hours
        self.values = values
        self.train = values[:TRAIN_HOURS]
        self.val = values[TRAIN_HOURS - window + 1 : start]
        self.ends = np.arange(start, values.size)
        self.windows = np.stack([values[e - window + 1 : e + 1] for e in self.ends])
        self.seeds = (self.ends * 7919).astype(np.int64)
        self.labels = np.isin(self.ends, self.spikes)


def _fit(cls: type[Detector], data: Data, seed: int) -> Detector:
    detector = cls(cls.tiny_params())  # type: ignore[call-arg]
    detector.fit(data.train, val=data.val, seed=seed, progress=False)
    return detector


@pytest.fixture(scope="module", params=DETECTORS, ids=lambda cls: cls.name)
def trained(request: pytest.FixtureRequest) -> tuple[Detector, Data]:
    cls: type[Detector] = request.param
    data = Data(cls.tiny_params().window)  # type: ignore[attr-defined]
    return _fit(cls, data, seed=0), data


def test_scores_are_finite_with_the_right_shape(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    details = detector.score_details(data.windows, data.seeds)
    assert isinstance(details, ScoreDetails)
    n = len(data.ends)
    for name in ("score", "expected", "expected_std", "expected_low", "expected_high"):
        arr = getattr(details, name)
        assert arr.shape == (n,) and arr.dtype == np.float64, name
        assert np.isfinite(arr).all(), name
    assert np.array_equal(detector.score(data.windows, data.seeds), details.score)
    assert (details.expected_low <= details.expected_high).all()
    assert detector.score(data.windows[:0], data.seeds[:0]).shape == (0,)


def test_not_fitted_before_fit(trained: tuple[Detector, Data], tmp_path: Path) -> None:
    detector, data = trained
    fresh = type(detector)(type(detector).tiny_params())  # type: ignore[call-arg]
    assert not fresh.is_fitted and detector.is_fitted
    with pytest.raises(NotFittedError):
        fresh.score(data.windows[:3], data.seeds[:3])
    with pytest.raises(NotFittedError):
        fresh.score_details(data.windows[:3], data.seeds[:3])
    with pytest.raises(NotFittedError):
        fresh.save(tmp_path / "m")


def test_save_load_gives_identical_scores(trained: tuple[Detector, Data], tmp_path: Path) -> None:
    detector, data = trained
    directory = tmp_path / detector.name
    detector.save(directory, extra_meta={"threshold": 1.25})
    loaded = type(detector).load(directory)
    assert loaded.meta["threshold"] == 1.25 and loaded.meta["detector"] == detector.name
    assert loaded.window == detector.window
    before = detector.score_details(data.windows, data.seeds)
    after = loaded.score_details(data.windows, data.seeds)
    for name in ("score", "expected", "expected_std", "expected_low", "expected_high"):
        assert np.array_equal(getattr(before, name), getattr(after, name)), name


def test_load_refuses_another_detectors_artifact(
    trained: tuple[Detector, Data], tmp_path: Path
) -> None:
    detector, _ = trained
    detector.save(tmp_path / "m")
    (tmp_path / "m" / "meta.json").write_text(
        (tmp_path / "m" / "meta.json").read_text().replace(detector.name, "someone-else")
    )
    with pytest.raises(ArtifactError):
        type(detector).load(tmp_path / "m")
    with pytest.raises(ArtifactError):
        type(detector).load(tmp_path / "missing")


def test_same_seed_same_scores(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    again = _fit(type(detector), data, seed=0)
    assert np.array_equal(
        again.score(data.windows, data.seeds), detector.score(data.windows, data.seeds)
    )
    assert np.array_equal(
        detector.score(data.windows, data.seeds), detector.score(data.windows, data.seeds)
    )


def test_scores_do_not_depend_on_the_batch(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    full = detector.score(data.windows, data.seeds)
    for i in (0, 5, len(full) - 1):
        alone = detector.score(data.windows[i : i + 1], data.seeds[i : i + 1])
        assert np.array_equal(alone, full[i : i + 1]), i
    order = np.random.default_rng(0).permutation(len(full))
    assert np.array_equal(detector.score(data.windows[order], data.seeds[order]), full[order])


def test_injected_spikes_score_higher(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    scores = detector.score(data.windows, data.seeds)
    auc = _roc_auc(data.labels, scores)
    assert auc >= MIN_SPIKE_AUC, auc
    assert np.median(scores[data.labels]) > np.percentile(scores[~data.labels], 95)
