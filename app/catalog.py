"""The detectors the product knows: the one place their names and classes are listed.

Training, scoring, evaluation, the dashboard and the job read detector names from here,
never from a string of their own. Classes are imported only when asked for
(``DetectorSpec.detector_class``), so light processes (the dashboard, the job's driver)
can list detectors without importing torch.

Adding a detector: put its package under ``app/detectors/<name>/`` (a class with the
``app.detectors.base.Detector`` contract and a pydantic params class) and add one
``DetectorSpec`` to ``DETECTORS`` below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DetectorSpec:
    """Where a detector's code lives, and how it is shown."""

    name: str  #: its key: model folders ``<model root>/<name>/<combo>``, CLI choices, columns
    label: str  #: how reports and the dashboard name it
    module: str
    class_name: str
    params_name: str
    #: The ``TrainConfig`` field (CLI option) that sets its window; None: no such option.
    window_option: str | None = None

    def detector_class(self) -> Any:
        return getattr(importlib.import_module(self.module), self.class_name)

    def params_class(self) -> Any:
        return getattr(importlib.import_module(self.module), self.params_name)


DETECTORS: dict[str, DetectorSpec] = {
    spec.name: spec
    for spec in (
        DetectorSpec(
            "fcvae",
            "FCVAE",
            "app.detectors.fcvae.detector",
            "FCVAEDetector",
            "FCVAEParams",
            window_option="window",
        ),
        DetectorSpec(
            "vaegan",
            "VAE+GAN",
            "app.detectors.vaegan.detector",
            "VAEGANDetector",
            "VAEGANParams",
            window_option="vaegan_window",
        ),
    )
}
#: The detector a decision always has (its expected band is the one shown).
PRIMARY = "fcvae"
#: The decision over the detectors (``ensemble.json`` at the model root).
ENSEMBLE = "ensemble"


def detector_names() -> tuple[str, ...]:
    """Every registered detector, in registration order."""
    return tuple(DETECTORS)


def decision_names() -> tuple[str, ...]:
    """What a user may ask to decide with: the ensemble or one detector alone."""
    return (ENSEMBLE, *DETECTORS)


def spec(name: str) -> DetectorSpec:
    """The registered detector ``name``; a clear error naming the known ones otherwise."""
    try:
        return DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}") from None
