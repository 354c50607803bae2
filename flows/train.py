"""Train flow: one task that trains (in this process, or in `train.nproc`
processes under torchrun) and exports the generator. See pipeline/train/."""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.config import Config, ConfigError

STAGE_OF = {"color": "ingest", "sketch": "extract", "style": "featurize"}


@task(cache_policy=NO_CACHE)
def fit(cfg: Config) -> dict:
    from pipeline.jsonio import read_json
    from pipeline.train import ddp

    if cfg.train.nproc > 1:
        ddp.launch(cfg, cfg.train.nproc)
        return read_json(cfg.data_root / "metrics" / "train.json")
    from pipeline.train.loop import train as run

    return run(cfg)


@flow(name="train", log_prints=True)
def train_flow(cfg: Config) -> dict:
    return fit(cfg)


def train(cfg: Config) -> dict:
    """Stage entry: missing or unusable shards, and an unreadable checkpoint, are
    one line and exit 2."""
    for name, stage in STAGE_OF.items():
        manifest = cfg.data_root / "shards" / name / "_manifest.json"
        if not manifest.is_file():  # checked before Prefect and torch start
            raise ConfigError(f"train: {manifest}: not found (run the {stage} stage first)")
    from pipeline.train.checkpoint import CheckpointUnreadable
    from pipeline.train.loader import DataError

    try:
        return train_flow(cfg)
    except (DataError, CheckpointUnreadable) as err:
        raise ConfigError(f"train: {err}") from None
