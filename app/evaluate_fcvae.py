"""``python -m app.evaluate_fcvae``: the original name of ``python -m app.evaluate``."""

from __future__ import annotations

import sys

from app.evaluate import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m app.evaluate_fcvae"))
