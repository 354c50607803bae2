"""Task runners for fan-out stages, chosen by a `TaskRunnerConfig` section."""
from __future__ import annotations

import os
from collections import deque
from typing import Callable, Iterable, Iterator

from prefect.task_runners import ThreadPoolTaskRunner

from pipeline.config import ConfigError, TaskRunnerConfig

DASK_ADDRESS_ENV = "S2P_DASK_ADDRESS"


def task_runner_for(cfg: TaskRunnerConfig, key: str):
    """Build the Prefect task runner; `key` names the params section in errors."""
    if cfg.kind == "inprocess":
        # One worker thread: tasks run one after another in this process.
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if cfg.kind == "local_dask":
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": cfg.workers,
                "threads_per_worker": cfg.threads_per_worker,
                "processes": True,
                "dashboard_address": None,
            }
        )
    address = cfg.address or os.environ.get(DASK_ADDRESS_ENV)
    if not address:
        raise ConfigError(
            f"params.yaml: {key}.runner.address: null and ${DASK_ADDRESS_ENV} is not set "
            "(kind dask_address needs a scheduler address)"
        )
    return DaskTaskRunner(address=address)


def submit_windowed(submit: Callable, items: Iterable, window: int) -> Iterator:
    """Submit `submit(item)` for each item, at most `window` in flight; yield
    (item, result) in submission order. Bounded memory however many items."""
    pending: deque = deque()
    for item in items:
        pending.append((item, submit(item)))
        if len(pending) >= window:
            first, fut = pending.popleft()
            yield first, fut.result()
    while pending:
        first, fut = pending.popleft()
        yield first, fut.result()
