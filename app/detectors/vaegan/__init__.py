"""VAE+GAN (DESIGN §6): a VAE whose decoder is also a GAN generator, plus a window critic.

Higher scores mean more anomalous: a weighted sum of robust z-scores of the last point's
reconstruction error and of the critic's "not real" verdict.
"""

from __future__ import annotations

from app.detectors.vaegan.detector import VAEGANDetector, VAEGANParams

__all__ = ["VAEGANDetector", "VAEGANParams"]
