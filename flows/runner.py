"""Task runners for fan-out stages, chosen by a `TaskRunnerConfig` section."""
from __future__ import annotations

import os
import contextlib
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
        return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(cfg))
    address = cfg.address or os.environ.get(DASK_ADDRESS_ENV)
    if not address:
        raise ConfigError(
            f"params.yaml: {key}.runner.address: null and ${DASK_ADDRESS_ENV} is not set "
            "(kind dask_address needs a scheduler address)"
        )
    return DaskTaskRunner(address=address)


def local_cluster_kwargs(cfg: TaskRunnerConfig) -> dict:
    """A local Dask cluster reachable from this machine only: a Dask scheduler
    runs whatever code it is sent, so nothing of it may listen on the network."""
    return {
        "n_workers": cfg.workers,
        "threads_per_worker": cfg.threads_per_worker,
        "processes": True,
        "host": "127.0.0.1",  # scheduler and workers
        "dashboard_address": "127.0.0.1:0",  # ":0" binds every interface; None still binds 8787
    }


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


@contextlib.contextmanager
def shared_prefect_api(enabled: bool):
    """Let local Dask worker processes report to this process's Prefect API.

    With no PREFECT_API_URL, Prefect runs an ephemeral server for the flow's
    process; worker processes do not see it and each would start its own (slow,
    and racy with several tasks per worker). Start it first and export its URL
    while the flow runs, so the workers spawned for it inherit the address.
    """
    from prefect.settings import PREFECT_API_URL

    if not enabled or os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def run_flow(flow_fn, cfg, runner_cfg: TaskRunnerConfig, key: str):
    """Run a fan-out stage flow on the task runner its params section names."""
    runner = task_runner_for(runner_cfg, key)
    with shared_prefect_api(runner_cfg.kind == "local_dask"):
        return flow_fn.with_options(task_runner=runner)(cfg)
