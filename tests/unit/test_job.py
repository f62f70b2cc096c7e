"""Pure parts of the streaming job: the model archive that travels to a cluster's executors."""

from __future__ import annotations

import zipfile
from pathlib import Path

from app.streaming.job import pack_models


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
    archive = pack_models(models, out)
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
    first = pack_models(models, tmp_path / "o1").name
    assert pack_models(models, tmp_path / "o2").name == first
    (models / "fcvae" / "A" / "weights.pt").write_bytes(b"retrained")
    assert pack_models(models, tmp_path / "o3").name != first
