"""Trained artifacts on disk and the per-combo bundles that score with them.

The layout on disk is ``app.artifacts``'s.
A bundle is loaded once per process and cached by combo; its ``version`` is a hash of
the artifact files, so a changed model gets a new version in every scored record.
Nothing here is Spark- or Kafka-aware.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.artifacts import (
    artifact_version,
    detector_dir,
    ensemble_path,
    read_ensemble,
    trained_combos,
)
from app.catalog import ENSEMBLE, PRIMARY, detector_names, spec
from app.errors import ArtifactError
from app.postprocess.decision import Decision, EnsembleDecision

log = logging.getLogger(__name__)


@dataclass
class ComboBundle:
    """Everything needed to score one combo's windows: its detectors, each one's
    ``Decision``, and the ``EnsembleDecision`` when the ensemble decides."""

    combo: str
    detector: str  #: the decision used: ``ensemble`` or one detector's name
    version: str
    window: int
    models: dict[str, Any]  #: detector name -> loaded detector (the primary one first)
    decisions: dict[str, Decision]
    ensemble: EnsembleDecision | None = None

    @property
    def primary(self) -> Any:
        """The detector whose expected band is shown (``app.catalog.PRIMARY``)."""
        return self.models[PRIMARY]

    def decision(self) -> Decision | EnsembleDecision:
        """What turns this bundle's scores into flags."""
        if self.detector == ENSEMBLE:
            assert self.ensemble is not None
            return self.ensemble
        return self.decisions[self.detector]

    def score(self, windows: NDArray[np.float64], seeds: NDArray[np.int64]) -> dict[str, Any]:
        """Score windows (raw counts, NaN = missing; the last point present) → named arrays.

        Keys: ``score``/``threshold`` (calibrated scale, higher = more anomalous),
        ``is_anomaly``, ``direction``, ``expected``, ``expected_low``, ``expected_high``
        and each detector's raw and calibrated score.
        """
        return combine_bundle_scores(self, windows, seeds)


class ModelRegistry:
    """Finds, validates and caches per-combo model bundles under ``model_path``."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        detector: str = ENSEMBLE,
        n_samples: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.model_path = Path(model_path)
        self.detector = detector
        self.n_samples = n_samples
        self.device = device
        self._bundles: dict[str, ComboBundle] = {}

    def combos(self) -> list[str]:
        """Combos with a trained primary (FCVAE) artifact."""
        return trained_combos(self.model_path, PRIMARY)

    def ensemble_settings(self) -> dict[str, Any]:
        return read_ensemble(self.model_path)

    def effective_detector(self) -> str:
        """The detector actually used: ``ensemble`` falls back to ``fcvae`` when no
        VAE+GAN artifacts or ensemble settings exist (logged once)."""
        if self.detector != ENSEMBLE:
            return self.detector
        others = [n for n in detector_names() if n != PRIMARY]
        if self.ensemble_settings() and all(
            detector_dir(self.model_path, n).is_dir() for n in others
        ):
            return ENSEMBLE
        return PRIMARY

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

    def _trained_with(self, key: str, default: Any, differ: str) -> Any:
        """``training[key]`` of the primary detector's ``meta.json``, the same for every
        combo (``default`` for artifacts that predate the key); ``differ`` ends the error
        naming the values when combos disagree."""
        values = {
            self.bundle(combo).primary.meta.get("training", {}).get(key) or default
            for combo in self.check()
        }
        if len(values) > 1:
            raise ArtifactError(f"the models under {self.model_path} {differ}: {sorted(values)}")
        return values.pop()

    def step_seconds(self) -> int:
        """The time step the models were trained at (``training.step_seconds``; hourly
        for artifacts that predate it). One step for all combos."""
        return int(
            self._trained_with(
                "step_seconds",
                3600,
                "were trained at different time steps (s); serve each step from its own "
                "MODEL_PATH and topic",
            )
        )

    def value_kind(self) -> str:
        """What the models were trained on: ``counts`` or ``real`` (``training.values``;
        counts for artifacts that predate it)."""
        return str(
            self._trained_with(
                "values", "counts", "were trained on different kinds of values (pass --values)"
            )
        )

    def window(self) -> int:
        """The longest window any combo's bundle needs (the stream keeps this many hours)."""
        return max(self.bundle(combo).window for combo in self.check())

    def bundle(self, combo: str) -> ComboBundle:
        """The cached bundle of ``combo`` (loaded on first use)."""
        if combo not in self._bundles:
            self._bundles[combo] = self._load(combo)
        return self._bundles[combo]

    def _load(self, combo: str) -> ComboBundle:
        fdir = detector_dir(self.model_path, PRIMARY, combo)
        if not fdir.is_dir():
            raise ArtifactError(
                f"no {spec(PRIMARY).label} model for combo {combo!r} in {fdir} "
                f"(known: {self.combos()})"
            )
        detector = self.effective_detector()
        names = [PRIMARY]
        if detector != PRIMARY:
            names += [n for n in detector_names() if n != PRIMARY and detector in (ENSEMBLE, n)]
        models: dict[str, Any] = {}
        versions = []
        for name in names:
            folder = detector_dir(self.model_path, name, combo)
            model = spec(name).detector_class().load(folder, device=self.device)
            if self.n_samples is not None and name == PRIMARY:
                model.params = model.params.model_copy(update={"n_samples": self.n_samples})
            models[name] = model
            versions.append(artifact_version(folder))
        decisions = {
            name: Decision.from_dict(m.meta["decision"])
            for name, m in models.items()
            if m.meta.get("decision")
        }
        ensemble = None
        if detector == ENSEMBLE:
            settings = self.ensemble_settings().get("combos", {}).get(combo, {})
            if not settings:
                raise ArtifactError(
                    f"{ensemble_path(self.model_path)} has no entry for "
                    f"combo {combo!r}: retrain the ensemble"
                )
            ensemble = EnsembleDecision.from_dict(settings)
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
            window=max(int(m.window) for m in models.values()),
            models=models,
            decisions=decisions,
            ensemble=ensemble,
        )


def combine_bundle_scores(
    bundle: ComboBundle, windows: NDArray[np.float64], seeds: NDArray[np.int64]
) -> dict[str, Any]:
    """Score windows with the bundle's detectors and decide (see ``ComboBundle.score``).

    Each detector sees its own window length (the newest steps of the bundle's window) and
    its own ``Decision`` calibrates its score; the bundle's decision (one detector's, or the
    ensemble's over all of them) gives the score, the threshold and the flags. The
    expected band is the primary detector's.
    """
    last = windows[:, -1]
    out: dict[str, Any] = {}
    calibrated: dict[str, NDArray[np.float64]] = {}
    expected = low = high = None
    for name, model in bundle.models.items():
        details = model.score_details(np.ascontiguousarray(windows[:, -model.window :]), seeds)
        raw = np.asarray(details.score, dtype=np.float64)
        decision = bundle.decisions.get(name)
        calibrated[name] = decision.calibrate(raw) if decision is not None else raw
        out[f"{name}_score"], out[f"{name}_calibrated"] = raw, calibrated[name]
        if name == PRIMARY:
            expected = np.asarray(details.expected, dtype=np.float64)
            low = getattr(details, "expected_low", None)
            high = getattr(details, "expected_high", None)
    assert expected is not None, "a bundle always holds its primary detector"
    out["expected"], out["expected_low"], out["expected_high"] = expected, low, high

    rule = bundle.decision()
    if isinstance(rule, EnsembleDecision):
        out["score"] = rule.combine(calibrated)
    else:
        out["score"] = calibrated[bundle.detector]
    out["threshold"] = np.full(len(last), rule.threshold)
    rate = (rule.operating_point or {}).get("alarm_runs_per_day")
    out["false_alarms_per_day"] = np.full(len(last), np.nan if rate is None else float(rate))
    out["is_anomaly"] = rule.flags(out["score"])
    spike_or_dip = np.where(last >= expected, "spike", "dip")
    out["direction"] = np.where(out["is_anomaly"], spike_or_dip, None)  # type: ignore[call-overload]
    return out
