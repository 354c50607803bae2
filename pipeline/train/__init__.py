"""Training: streaming shard loader (loader.py), the GAN loop (loop.py),
training state (checkpoint.py), sample grids (samples.py), dvclive curves
(curves.py), DDP primitives (distributed.py) and the torchrun launcher
(launch.py). The stage entry is flows/train.py."""
from __future__ import annotations

from pipeline.config import Config, ConfigError
from pipeline.layout import STAGE_OF_SET


def check_params(cfg: Config) -> None:
    """Checked before Prefect and torch are imported: every input shard set is
    finished. Raises ConfigError."""
    for name, stage in STAGE_OF_SET.items():
        manifest = cfg.layout.shards(name) / "_manifest.json"
        if not manifest.is_file():
            raise ConfigError(f"train: {manifest}: not found (run the {stage} stage first)")
