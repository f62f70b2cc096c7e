"""``python -m app.train_fcvae``: train the primary detector (FCVAE, ``catalog.PRIMARY``) of
every combo (see ``app.train``)."""

from __future__ import annotations

import logging
import sys

from app.catalog import PRIMARY
from app.errors import AnomalyError
from app.train import build_parser, run
from app.train_config import TrainConfig

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging

    parser = build_parser("python -m app.train_fcvae", fixed_detector=PRIMARY)
    config = TrainConfig.from_args(parser.parse_args(argv))
    setup_logging()
    try:
        return run(config, [PRIMARY], {PRIMARY: config.output_dir})
    except AnomalyError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
