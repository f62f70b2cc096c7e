"""The model layout on disk: the one module that knows where trained artifacts live.

Layout (``MODEL_PATH``, default ``models/``)::

    <root>/<detector>/<combo>/meta.json, weights.pt   one trained detector of one combo
    <root>/ensemble.json                             the ensemble's decision per combo

``<detector>`` is a name from ``app.catalog``. Writing ``meta.json`` + ``weights.pt`` is the
detectors' own (``app.detectors.base.write_artifact``, atomic, no pickle); everything that
finds, reads, versions, writes the ensemble file or packs the layout goes through here.
Nothing here imports torch, Spark, Dash or Kafka.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from app.catalog import DETECTORS, PRIMARY, detector_names
from app.errors import ArtifactError

META_FILE = "meta.json"
WEIGHTS_FILE = "weights.pt"
ENSEMBLE_FILE = "ensemble.json"
#: What a model root holds (and what is shipped to executors).
MODEL_FILE_PATTERNS = ("*.json", "*.pt")


def model_root(path: Path) -> Path:
    """Accept the model root (``models``) or one detector's folder (``models/fcvae``)."""
    return path.parent if path.name in DETECTORS else path


def detector_dir(root: Path, detector: str, combo: str | None = None) -> Path:
    """``<root>/<detector>`` or, with a combo, ``<root>/<detector>/<combo>``."""
    folder = Path(root) / detector
    return folder if combo is None else folder / combo


def trained_combos(root: Path, detector: str = PRIMARY) -> list[str]:
    """Combos with a ``meta.json`` for ``detector``, sorted."""
    folder = detector_dir(root, detector)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / META_FILE).exists())


def artifact_version(directory: Path) -> str:
    """Short content hash of ``meta.json`` and ``weights.pt`` in ``directory``."""
    digest = hashlib.sha256()
    for name in (META_FILE, WEIGHTS_FILE):
        path = directory / name
        if not path.exists():
            raise ArtifactError(f"{path} is missing: train this combo first (make train)")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def read_meta(root: Path, detector: str, combo: str) -> dict[str, Any]:
    """The ``meta.json`` of one trained detector of one combo."""
    path = detector_dir(root, detector, combo) / META_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} cannot be read: {exc}") from exc


def find_metas(root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Combos with a readable ``meta.json`` per detector, and the unreadable files' paths
    (reads JSON only, never weights)."""
    found: dict[str, list[str]] = {name: [] for name in detector_names()}
    broken: list[str] = []
    for name in detector_names():
        folder = detector_dir(root, name)
        if not folder.is_dir():
            continue
        for meta in sorted(folder.glob(f"*/{META_FILE}")):
            try:
                json.loads(meta.read_text())
            except (OSError, ValueError):
                broken.append(str(meta))
                continue
            found[name].append(meta.parent.name)
    return found, broken


def ensemble_path(root: Path) -> Path:
    return Path(root) / ENSEMBLE_FILE


def read_ensemble(root: Path) -> dict[str, Any]:
    """``ensemble.json`` as a dict; ``{}`` when there is none."""
    path = ensemble_path(root)
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc


def write_ensemble(root: Path, combos: dict[str, dict[str, Any]], seed: int) -> Path:
    """Write ``ensemble.json`` (each combo's ensemble decision) atomically."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    payload = {
        "schema_version": 1,
        "combine": "app.postprocess.combine.combine_calibrated",
        "seed": seed,
        "combos": combos,
    }
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".ensemble-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
    path = ensemble_path(root)
    os.replace(tmp, path)
    return path


def pack(root: Path, out_dir: Path) -> Path:
    """Zip the model files under ``root`` into ``out_dir``; return the archive.

    The name carries a hash of the contents (``models-<sha>.zip``), so a retrained model
    set is a new archive, never a stale cached one.
    """
    files = sorted(
        {f for pattern in MODEL_FILE_PATTERNS for f in Path(root).rglob(pattern) if f.is_file()}
    )
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode())
        digest.update(f.read_bytes())
    archive = out_dir / f"models-{digest.hexdigest()[:12]}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.relative_to(root).as_posix())
    return archive
