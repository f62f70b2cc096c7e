"""FCVAE (Wang et al., WWW 2024): frequency-conditioned VAE scoring a window's last hour.

Higher scores mean more anomalous (negative log-likelihood of the last point).
"""

from __future__ import annotations

from app.detectors.fcvae.detector import FCVAEDetector, FCVAEParams

__all__ = ["FCVAEDetector", "FCVAEParams"]
