"""Logging set-up, called once by each entry point."""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once: one line per record on stderr.

    The level comes from ``level``, else ``LOG_LEVEL``, else INFO.
    """
    chosen = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    root = logging.getLogger()
    if getattr(root, "_txn_anomaly_configured", False):
        root.setLevel(chosen)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    root.handlers[:] = [handler]
    root.setLevel(chosen)
    # Chatty third-party loggers stay at WARNING unless asked for.
    for name in ("kafka", "py4j", "matplotlib", "urllib3", "werkzeug"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    root._txn_anomaly_configured = True  # type: ignore[attr-defined]
