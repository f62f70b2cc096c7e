"""One conformance suite run against every ``Detector`` registered in ``app.catalog``.

Each detector is trained once per module with its ``tiny_params()`` on a seasonal hourly
series; the held-out part carries injected spikes. Checks: finite scores of the right shape,
``NotFittedError`` before fitting, bad series refused (and a failed refit changing nothing),
the global RNG left alone, identical scores after save → load, clear errors for broken
artifacts, identical weights, history and scores for the same seed, scores independent of
the batch (bit for bit, across ``SCORE_CHUNK``) and of the thread count, a seed that changes
the draws but not much the score, an expected value that tracks the series, and a minimum
ROC-AUC on the injected spikes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app import catalog
from app.detectors.base import (
    META_FILE,
    SCHEMA_VERSION,
    SCORE_CHUNK,
    WEIGHTS_FILE,
    Detector,
    ScoreDetails,
    read_artifact,
)
from app.errors import ArtifactError, DataError, NotFittedError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DETECTORS: list[type[Detector]] = [spec.detector_class() for spec in catalog.DETECTORS.values()]

TRAIN_HOURS = 24 * 28
VAL_HOURS = 24 * 7
TEST_HOURS = 24 * 14
MIN_SPIKE_AUC = 0.9
DETAIL_FIELDS = ("score", "expected", "expected_std", "expected_low", "expected_high")


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

    def windows_ending_at(self, ends: np.ndarray) -> np.ndarray:
        """Raw windows of the whole series ending at ``ends``."""
        return np.stack([self.values[e - self.window + 1 : e + 1] for e in ends])

    def present_ends(self, start: int, stop: int) -> np.ndarray:
        """The hours in ``[start, stop)`` whose count is present (scorable window ends)."""
        ends = np.arange(start, stop)
        return ends[~np.isnan(self.values[ends])]


def _fit(cls: type[Detector], data: Data, seed: int) -> Detector:
    detector = cls(cls.tiny_params())  # type: ignore[call-arg]
    detector.fit(data.train, val=data.val, seed=seed, progress=False)
    return detector


def _short(cls: type[Detector], **update: object) -> Detector:
    """An unfitted detector with ``tiny_params()`` changed by ``update`` (shorter trainings)."""
    return cls(cls.tiny_params().model_copy(update=update))  # type: ignore[call-arg]


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
    for name in DETAIL_FIELDS:
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
    for name in DETAIL_FIELDS:
        assert np.array_equal(getattr(before, name), getattr(after, name)), name


def test_artifact_errors(trained: tuple[Detector, Data], tmp_path: Path) -> None:
    detector, _ = trained
    cls = type(detector)
    with pytest.raises(ArtifactError, match="does not exist"):
        cls.load(tmp_path / "nowhere")
    good = tmp_path / "good"
    detector.save(good)

    def broken(name: str) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        for f in (META_FILE, WEIGHTS_FILE):
            (directory / f).write_bytes((good / f).read_bytes())
        return directory

    def edit_meta(name: str, **changes: object) -> Path:
        directory = broken(name)
        meta = json.loads((directory / META_FILE).read_text())
        meta.update(changes)
        (directory / META_FILE).write_text(json.dumps(meta))
        return directory

    renamed = broken("renamed")
    (renamed / META_FILE).write_text(
        (renamed / META_FILE).read_text().replace(detector.name, "someone-else")
    )
    with pytest.raises(ArtifactError):
        cls.load(renamed)
    no_weights = broken("no_weights")
    (no_weights / WEIGHTS_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"weights\.pt is missing"):
        cls.load(no_weights)
    no_meta = broken("no_meta")
    (no_meta / META_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"meta\.json is missing"):
        cls.load(no_meta)
    bad_json = broken("bad_json")
    (bad_json / META_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        cls.load(bad_json)
    with pytest.raises(ArtifactError, match="schema_version"):
        cls.load(edit_meta("schema", schema_version=SCHEMA_VERSION + 1))
    other = next((name for name in catalog.DETECTORS if name != detector.name), "someone-else")
    with pytest.raises(ArtifactError, match=f"'{other}' artifact"):
        cls.load(edit_meta("other", detector=other))
    with pytest.raises(ArtifactError, match="params"):
        cls.load(edit_meta("params", params={"window": "x"}))
    params = detector.params  # type: ignore[attr-defined]
    wrong_shape = {**params.model_dump(), "hidden_dim": params.hidden_dim + 1}
    with pytest.raises(ArtifactError, match="do not match"):
        cls.load(edit_meta("shape", params=wrong_shape))
    corrupt = broken("corrupt")
    (corrupt / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        cls.load(corrupt)


def test_fit_rejects_bad_series(trained: tuple[Detector, Data]) -> None:
    detector, _ = trained
    fresh = _short(type(detector), log_transform=True)
    with pytest.raises(DataError, match="1-D"):
        fresh.fit(np.ones((10, 3)), progress=False)
    with pytest.raises(DataError, match="infinite"):
        fresh.fit(np.array([1.0, np.inf] * 50), progress=False)
    with pytest.raises(DataError, match="at least window"):
        fresh.fit(np.arange(10.0), progress=False)
    with pytest.raises(DataError, match="need >= 2"):
        fresh.fit(np.arange(fresh.window, dtype=float), progress=False)  # one window only
    with pytest.raises(DataError, match="negative"):
        fresh.fit(-np.arange(100, dtype=float), progress=False)
    assert not fresh.is_fitted


def test_a_failed_refit_keeps_the_fitted_model(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    refitted = _short(type(detector), epochs=1)
    refitted.fit(data.train[: 24 * 10], seed=0, progress=False)
    ends = data.present_ends(data.window, 24 * 4)
    wins = data.windows_ending_at(ends)
    before = refitted.score(wins, ends)
    with pytest.raises(DataError, match="val"):
        refitted.fit(data.train[: 24 * 10] * 3.0, val=np.full(data.window, np.nan), progress=False)
    assert np.array_equal(refitted.score(wins, ends), before)


def test_fit_leaves_the_global_rng_alone(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _short(type(detector), epochs=1).fit(data.train[: 24 * 10], seed=1, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_same_seed_same_scores(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    again = _fit(type(detector), data, seed=0)
    assert np.array_equal(
        again.score(data.windows, data.seeds), detector.score(data.windows, data.seeds)
    )
    assert np.array_equal(
        detector.score(data.windows, data.seeds), detector.score(data.windows, data.seeds)
    )


def test_same_seed_same_weights_history_and_scores(
    trained: tuple[Detector, Data], tmp_path: Path
) -> None:
    detector, data = trained
    train = data.train[: 24 * 20]
    a, b, c = (_short(type(detector), epochs=3, kl_warmup_epochs=1) for _ in range(3))
    for fitted, seed in ((a, 5), (b, 5), (c, 6)):
        fitted.fit(train, seed=seed, progress=False)
    saved = {}
    for key, fitted in (("a", a), ("b", b), ("c", c)):
        fitted.save(tmp_path / key)
        saved[key] = read_artifact(tmp_path / key, detector.name)
    (meta_a, weights_a), (meta_b, weights_b), (_, weights_c) = saved["a"], saved["b"], saved["c"]
    for part, sd in weights_a.items():
        for key, tensor in sd.items():
            assert torch.equal(tensor, weights_b[part][key]), (part, key)
        # another seed gives other weights: every weight matrix of every part differs
        matrices = [key for key, tensor in sd.items() if tensor.ndim >= 2]
        assert matrices, part
        for key in matrices:
            assert not torch.equal(sd[key], weights_c[part][key]), (part, key)
    ends = data.present_ends(data.window, 24 * 20)
    wins = data.windows_ending_at(ends)
    assert np.array_equal(a.score(wins, ends), b.score(wins, ends))
    history_a, history_b = (
        {k: v for k, v in meta["fit"]["history"].items() if k != "epoch_seconds"}
        for meta in (meta_a, meta_b)
    )
    assert history_a == history_b and {"train_loss", "kl_weight", "lr"} <= set(history_a)
    assert meta_a["fit"]["best_epoch"] == meta_a["fit"]["epochs_run"]  # no val: last epoch kept


def test_scores_do_not_depend_on_the_batch(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    rng = np.random.default_rng(0)
    ends = rng.integers(data.window, data.values.size, 1000)
    ends = ends[~np.isnan(data.values[ends])]
    wins = data.windows_ending_at(ends)
    seeds = rng.integers(-(2**63), 2**63 - 1, ends.size, dtype=np.int64)
    batch = detector.score_details(wins, seeds)
    assert ends.size > SCORE_CHUNK  # spans a chunk boundary
    for i in (0, 1, 5, 17, SCORE_CHUNK - 1, SCORE_CHUNK, ends.size - 1):
        alone = detector.score_details(wins[i : i + 1], seeds[i : i + 1])
        for name in DETAIL_FIELDS:
            assert np.array_equal(getattr(alone, name), getattr(batch, name)[i : i + 1]), (i, name)
    # another split of the same windows, in another order
    order = rng.permutation(ends.size)
    assert np.array_equal(detector.score(wins[order], seeds[order]), batch.score[order])
    assert np.array_equal(detector.score(wins[300:333], seeds[300:333]), batch.score[300:333])
    full = detector.score(data.windows, data.seeds)
    for i in (0, 5, len(full) - 1):
        alone_score = detector.score(data.windows[i : i + 1], data.seeds[i : i + 1])
        assert np.array_equal(alone_score, full[i : i + 1]), i
    order = np.random.default_rng(0).permutation(len(full))
    assert np.array_equal(detector.score(data.windows[order], data.seeds[order]), full[order])


def test_scores_do_not_depend_on_the_thread_count(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    ends = np.arange(data.window + 500, data.window + 600)
    wins, seeds = data.windows_ending_at(ends), ends.astype(np.int64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = detector.score(wins, seeds)
        torch.set_num_threads(2)
        two = detector.score(wins, seeds)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(one, two)


def test_seed_changes_the_draws_but_not_much_the_score(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    ends = np.arange(data.window + 200, data.window + 260)
    wins = data.windows_ending_at(ends)
    a = detector.score(wins, ends.astype(np.int64))
    b = detector.score(wins, ends.astype(np.int64) + 10_000)
    assert not np.array_equal(a, b)
    assert np.corrcoef(a, b)[0, 1] > 0.9
    assert np.array_equal(a, detector.score(wins, ends.astype(np.int64)))


def test_expected_tracks_the_series(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    ends = data.present_ends(TRAIN_HOURS, TRAIN_HOURS + VAL_HOURS)  # clean validation hours
    wins = data.windows_ending_at(ends)
    d = detector.score_details(wins, ends.astype(np.int64))
    assert (d.expected_low >= 0).all() and (d.expected_low <= d.expected).all()
    assert (d.expected <= d.expected_high).all() and (d.expected_std > 0).all()
    error = np.abs(d.expected - wins[:, -1])
    assert np.median(error) < 0.5 * np.std(wins[:, -1])  # far better than the series mean


def test_injected_spikes_score_higher(trained: tuple[Detector, Data]) -> None:
    detector, data = trained
    scores = detector.score(data.windows, data.seeds)
    auc = _roc_auc(data.labels, scores)
    assert auc >= MIN_SPIKE_AUC, auc
    assert np.median(scores[data.labels]) > np.percentile(scores[~data.labels], 95)
