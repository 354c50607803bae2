"""One logging set-up for stages and the CLI: honest one-line messages.

Our loggers (`s2p.*` and module loggers under `pipeline.*`/`flows.*`) get their
own stderr handler and do not propagate: Prefect reconfigures the root logger
when a flow starts, which would otherwise hide our INFO lines.
"""
from __future__ import annotations

import logging
import os
import sys

OUR_LOGGERS = ("s2p", "pipeline", "flows")


def setup_logging(level: str | None = None) -> None:
    level = level or os.environ.get("S2P_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
