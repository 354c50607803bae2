"""Shared entry-point plumbing for the thin DVC stage scripts.

`run_stage` validates params.yaml before anything slow is imported or started,
so a bad config fails in a second with one line naming the key.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

from pipeline.config import Config, ConfigError, load_config
from pipeline.logs import setup_logging

# Prefect runs offline in ephemeral mode unless PREFECT_API_URL points at a server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
# The ephemeral API server can take over 20 s to start on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def run_stage(body: Callable[[Config], object], params: str = "params.yaml") -> None:
    setup_logging()
    try:
        cfg = load_config(os.environ.get("S2P_PARAMS", params))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        body(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
