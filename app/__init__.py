"""Real-time anomaly detection for hourly transaction volumes."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

#: The repository root (the folder that holds ``pyproject.toml``).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
