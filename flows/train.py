"""Train flow: one task that trains (in this process, or in `train.nproc`
processes under torchrun) and exports the generator. See pipeline/train/."""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.config import Config, ConfigError
from pipeline.train import check_params


@task(cache_policy=NO_CACHE)
def fit(cfg: Config) -> dict:
    from pipeline.jsonio import read_json
    from pipeline.train import launch

    if cfg.train.nproc > 1:
        launch.launch(cfg, cfg.train.nproc)
        return read_json(cfg.layout.metrics("train"))
    from pipeline.train.loop import train as run

    return run(cfg)


@flow(name="train", log_prints=True)
def train_flow(cfg: Config) -> dict:
    return fit(cfg)


def train(cfg: Config) -> dict:
    """Stage entry: missing or unusable shards, and an unreadable checkpoint, are
    one line and exit 2."""
    check_params(cfg)
    from pipeline.train.checkpoint import CheckpointUnreadable
    from pipeline.train.loader import DataError

    try:
        return train_flow(cfg)
    except (DataError, CheckpointUnreadable) as err:
        raise ConfigError(f"train: {err}") from None
