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
# Set by the pipeline flow (flows/repro.py) for the stages that `dvc repro` runs:
# each stage's flow run is tagged with pipeline_tag(its value) (stages/common.py).
PIPELINE_RUN_ENV = "S2P_PIPELINE_RUN"


def pipeline_tag(run_id: str) -> str:
    return f"pipeline-run:{run_id}"


REUSED = "reused"


def throughput(count: int, seconds: float) -> float | str:
    """images/s of the work this run did; "reused" when every shard was kept
    (0.00 images/s would read as a stall)."""
    if not count:
        return REUSED
    return round(count / seconds, 2) if seconds > 0 else 0.0


def rate_text(rate: float | str) -> str:
    return "all shards reused" if rate == REUSED else f"{rate:.2f} images/s"


class LineProgress:
    """stderr for a reader that is not a terminal (a pipe: DVC under the pipeline
    flow, Prefect's log): a progress bar's carriage-return redraws become lines of
    their own, so a bar never glues onto the next log line."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        if "\r" in text:
            text = text.replace("\r", "\n")
            if not text.endswith("\n"):
                text += "\n"
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def lines_for_pipes() -> None:
    """Install LineProgress as sys.stderr when stderr is not a terminal."""
    if not isinstance(sys.stderr, LineProgress) and not sys.stderr.isatty():
        sys.stderr = LineProgress(sys.stderr)


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
