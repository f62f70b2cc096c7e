"""Trained artifacts on disk and the per-combo bundles that score with them.

Layout (``MODEL_PATH``, default ``models/``)::

    models/fcvae/<combo>/meta.json, weights.pt     FCVAE (issue 3)
    models/vaegan/<combo>/meta.json, weights.pt    VAE+GAN (when trained)
    models/ensemble.json                           how the two are combined (when trained)

A bundle is loaded once per process and cached by combo; its ``version`` is a hash of
the artifact files, so a changed model gets a new version in every scored record.
Nothing here is Spark- or Kafka-aware.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.catalog import detector_names
from app.errors import ArtifactError

log = logging.getLogger(__name__)

DETECTOR_DIRS = detector_names()


def artifact_version(directory: Path) -> str:
    """Short content hash of ``meta.json`` and ``weights.pt`` in ``directory``."""
    digest = hashlib.sha256()
    for name in ("meta.json", "weights.pt"):
        path = directory / name
        if not path.exists():
            raise ArtifactError(f"{path} is missing: train this combo first (make train)")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _calibrator(state: dict[str, Any] | None) -> Any:
    if not state:
        return None
    from app.postprocess.calibrate import EmpiricalCalibrator

    return EmpiricalCalibrator.from_dict(state)


@dataclass
class ComboBundle:
    """Everything needed to score one combo's windows."""

    combo: str
    detector: str
    version: str
    window: int
    fcvae: Any
    fcvae_meta: dict[str, Any]
    vaegan: Any = None
    vaegan_meta: dict[str, Any] = field(default_factory=dict)
    ensemble: dict[str, Any] = field(default_factory=dict)

    def score(self, windows: NDArray[np.float64], seeds: NDArray[np.int64]) -> dict[str, Any]:
        """Score windows (raw counts, NaN = missing; the last point present) → named arrays.

        Keys: ``score``/``threshold`` (calibrated scale, higher = more anomalous),
        ``is_anomaly``, ``direction``, ``expected``, ``expected_low``, ``expected_high``
        and each detector's raw and calibrated score.
        """
        from app.scoring import combine_bundle_scores

        return combine_bundle_scores(self, windows, seeds)


class ModelRegistry:
    """Finds, validates and caches per-combo model bundles under ``model_path``."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        detector: str = "ensemble",
        n_samples: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.model_path = Path(model_path)
        self.detector = detector
        self.n_samples = n_samples
        self.device = device
        self._bundles: dict[str, ComboBundle] = {}

    def combos(self) -> list[str]:
        """Combos with an FCVAE artifact directory."""
        root = self.model_path / "fcvae"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / "meta.json").exists())

    def ensemble_settings(self) -> dict[str, Any]:
        path = self.model_path / "ensemble.json"
        if not path.exists():
            return {}
        try:
            return dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc

    def effective_detector(self) -> str:
        """The detector actually used: ``ensemble`` falls back to ``fcvae`` when no
        VAE+GAN artifacts or ensemble settings exist (logged once)."""
        if self.detector != "ensemble":
            return self.detector
        if self.ensemble_settings() and (self.model_path / "vaegan").is_dir():
            return "ensemble"
        return "fcvae"

    def check(self, window: int | None = None, detector: str | None = None) -> list[str]:
        """Load every combo once; raise ``ArtifactError`` naming the first problem.

        Called at start-up so a broken model directory fails the job before the first
        message, not at it.
        """
        combos = self.combos()
        if not combos:
            raise ArtifactError(
                f"no trained models under {self.model_path / 'fcvae'}: expected "
                "<MODEL_PATH>/fcvae/<combo>/meta.json and weights.pt (run `make train`, or "
                "point MODEL_PATH at the shipped models/)"
            )
        for combo in combos:
            bundle = self.bundle(combo)
            if window is not None and bundle.window != window:
                raise ArtifactError(
                    f"model for {combo!r} was trained with window {bundle.window}, but "
                    f"WINDOW_SIZE={window}: retrain or set WINDOW_SIZE={bundle.window}"
                )
        return combos

    def step_seconds(self) -> int:
        """The time step the models were trained at (``training.step_seconds`` in their
        ``meta.json``; hourly for artifacts that predate it). One step for all combos."""
        steps = {
            int(self.bundle(combo).fcvae_meta.get("training", {}).get("step_seconds") or 3600)
            for combo in self.check()
        }
        if len(steps) > 1:
            raise ArtifactError(
                f"the models under {self.model_path} were trained at different time steps "
                f"{sorted(steps)} s; serve each step from its own MODEL_PATH and topic"
            )
        return steps.pop()

    def window(self) -> int:
        """The longest window any combo's bundle needs (the stream keeps this many hours)."""
        return max(self.bundle(combo).window for combo in self.check())

    def bundle(self, combo: str) -> ComboBundle:
        """The cached bundle of ``combo`` (loaded on first use)."""
        if combo not in self._bundles:
            self._bundles[combo] = self._load(combo)
        return self._bundles[combo]

    def _load(self, combo: str) -> ComboBundle:
        from app.detectors.fcvae.detector import FCVAEDetector

        fdir = self.model_path / "fcvae" / combo
        if not fdir.is_dir():
            raise ArtifactError(
                f"no FCVAE model for combo {combo!r} in {fdir} (known: {self.combos()})"
            )
        fcvae = FCVAEDetector.load(fdir, device=self.device)
        if self.n_samples is not None:
            fcvae.params = fcvae.params.model_copy(update={"n_samples": self.n_samples})
        versions = [artifact_version(fdir)]
        detector = self.effective_detector()
        vaegan, vaegan_meta, ensemble = None, {}, {}
        if detector in ("ensemble", "vaegan"):
            from app.detectors.vaegan.detector import VAEGANDetector

            vdir = self.model_path / "vaegan" / combo
            vaegan = VAEGANDetector.load(vdir, device=self.device)
            vaegan_meta = vaegan.meta
            versions.append(artifact_version(vdir))
            ensemble = self.ensemble_settings().get("combos", {}).get(combo, {})
            if detector == "ensemble" and not ensemble:
                raise ArtifactError(
                    f"{self.model_path / 'ensemble.json'} has no entry for "
                    f"combo {combo!r}: retrain the ensemble"
                )
        log.info(
            "loaded models for combo=%s artifact_version=%s detector=%s",
            combo,
            "+".join(versions),
            detector,
        )
        return ComboBundle(
            combo=combo,
            detector=detector,
            version="+".join(versions),
            window=max(int(fcvae.window), int(vaegan.window) if vaegan else 0),
            fcvae=fcvae,
            fcvae_meta=fcvae.meta,
            vaegan=vaegan,
            vaegan_meta=vaegan_meta,
            ensemble=ensemble,
        )
