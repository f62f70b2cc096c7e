"""Pure parts of the streaming job: the model archive for a cluster's executors, and the
checkpoint check at start-up."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from app import artifacts
from app.errors import InfraError
from app.streaming.job import (
    STATE_LAYOUT,
    STATE_LAYOUT_FILE,
    check_checkpoint,
    checkpoint_sources,
)


def _models(root: Path) -> Path:
    for combo in ("A", "B"):
        d = root / "fcvae" / combo
        d.mkdir(parents=True)
        (d / "meta.json").write_text(f'{{"combo": "{combo}"}}')
        (d / "weights.pt").write_bytes(combo.encode() * 10)
        (d / "training_curves.png").write_bytes(b"png")
    (root / "ensemble.json").write_text("{}")
    return root


def test_archive_holds_the_model_files_under_their_relative_paths(tmp_path: Path) -> None:
    models = _models(tmp_path / "models")
    out = tmp_path / "out"
    out.mkdir()
    archive = artifacts.pack(models, out)
    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
        assert zf.read("fcvae/B/weights.pt") == b"B" * 10
    assert names == [
        "ensemble.json",
        "fcvae/A/meta.json",
        "fcvae/A/weights.pt",
        "fcvae/B/meta.json",
        "fcvae/B/weights.pt",
    ]  # plots stay behind


def test_archive_name_follows_the_contents(tmp_path: Path) -> None:
    models = _models(tmp_path / "models")
    (tmp_path / "o1").mkdir()
    (tmp_path / "o2").mkdir()
    (tmp_path / "o3").mkdir()
    first = artifacts.pack(models, tmp_path / "o1").name
    assert artifacts.pack(models, tmp_path / "o2").name == first
    (models / "fcvae" / "A" / "weights.pt").write_bytes(b"retrained")
    assert artifacts.pack(models, tmp_path / "o3").name != first


def _offsets(root: Path, batch: int, sources: int) -> Path:
    offsets = root / "offsets"
    offsets.mkdir(parents=True, exist_ok=True)
    lines = ["v1", '{"batchWatermarkMs":0}'] + ['{"transactions.hourly":{"0":180}}'] * sources
    (offsets / str(batch)).write_text("\n".join(lines))
    return root


def test_checkpoint_sources_reads_the_newest_offsets_file(tmp_path: Path) -> None:
    assert checkpoint_sources(tmp_path / "none") is None
    root = _offsets(tmp_path / "ckpt", 0, 2)
    (root / "offsets" / ".0.crc").write_text("x")  # Spark's checksum files are ignored
    assert checkpoint_sources(root) == 2
    _offsets(root, 10, 1)
    _offsets(root, 9, 2)
    assert checkpoint_sources(root) == 1  # batch 10, not the lexically last "9"


def test_a_checkpoint_of_the_two_source_plan_is_refused_with_what_to_do(tmp_path: Path) -> None:
    check_checkpoint(tmp_path / "fresh")  # nothing there yet: fine, and marked
    assert (tmp_path / "fresh" / STATE_LAYOUT_FILE).read_text() == STATE_LAYOUT
    ok = _offsets(tmp_path / "fresh", 3, 1)  # the job ran on it
    check_checkpoint(ok)
    old = _offsets(tmp_path / "old", 3, 2)
    (old / STATE_LAYOUT_FILE).write_text(STATE_LAYOUT)
    with pytest.raises(InfraError, match=r"earlier version of the job.*CHECKPOINT_LOCATION"):
        check_checkpoint(old)


def test_a_checkpoint_with_state_of_an_older_layout_is_refused(tmp_path: Path) -> None:
    """Checkpoints written before the held-hour state (no layout marker) cannot resume."""
    with pytest.raises(InfraError, match=r"state of layout 1.*CHECKPOINT_LOCATION"):
        check_checkpoint(_offsets(tmp_path / "before", 3, 1))
