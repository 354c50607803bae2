"""The evaluate stage's library: colour science (`colour`), per-part scoring and the
swap test (`parts`), baselines, the toon benchmark, reconstruction metrics on the
held-out split, real-image grids. The flow is `flows/evaluate.py`."""
from __future__ import annotations

from pipeline.config import Config, ConfigError


def check_params(cfg: Config) -> None:
    """Checked before Prefect and torch are imported: the exported generator
    exists. Raises ConfigError."""
    export = cfg.layout.generator
    for path in (export, export.with_suffix(".json")):
        if not path.is_file():
            raise ConfigError(f"evaluate: {path}: not found (run the train stage first)")
