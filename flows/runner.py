"""Task runners for fan-out stages, chosen by a `TaskRunnerConfig` section."""
from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from prefect.task_runners import ThreadPoolTaskRunner
from tqdm import tqdm

from pipeline.config import TaskRunnerConfig, dask_address
from pipeline.shards import ShardJob, ShardPlan


def task_runner_for(cfg: TaskRunnerConfig, key: str):
    """Build the Prefect task runner; `key` names the params section in errors."""
    if cfg.kind == "inprocess":
        # One worker thread: tasks run one after another in this process.
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if cfg.kind == "local_dask":
        return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(cfg))
    return DaskTaskRunner(address=dask_address(cfg, key))


def worker_threads(cfg: TaskRunnerConfig) -> int | None:
    """Threads a task may use: `threads_per_worker` on Dask (one worker process
    per core, so each must keep to its share), None in process (all cores)."""
    return None if cfg.kind == "inprocess" else cfg.threads_per_worker


def in_flight(cfg: TaskRunnerConfig, configured: int) -> int:
    """Tasks kept in flight: `configured`, and on Dask at least two per worker
    (results are taken in order: with one each, a worker idles whenever the
    oldest task is the slow one). For `dask_address`, `workers` should be the
    cluster's worker count."""
    return configured if cfg.kind == "inprocess" else max(configured, 2 * cfg.workers)


def limit_threads(threads: int | None) -> None:
    """Hold torch, OpenCV and TensorFlow to `threads` in this (worker) process.

    Dask's nanny sets OMP_NUM_THREADS=1, which torch honours, but OpenCV's own
    pool and TensorFlow's default to every core: two worker processes on two
    cores would then run four threads each and lose to the in-process run.
    """
    if not threads:
        return
    import cv2

    cv2.setNumThreads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised in this process: keeps its first setting
            pass


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


# Progress bars of the shard maps running in this process, by run key, and the
# rows each job reported itself. A task running in this process (the in-process
# runner) advances the bar as it goes; on a Dask worker the key is unknown and
# the flow advances the bar when the job's result arrives.
_BARS: dict[str, tqdm] = {}
_REPORTED: dict[tuple[str, str], int] = {}


# Tasks reach _BARS only through this function: Dask ships a task pickled by
# value, globals included, and a progress bar does not pickle. Module-level
# functions are pickled by name.
def task_progress(bar_key: str, job: str) -> Callable[[int], None] | None:
    """For a task: a callback advancing the flow's bar by n rows, or None when
    the flow runs in another process."""
    bar = _BARS.get(bar_key)
    if bar is None:
        return None

    def advance(rows: int) -> None:
        _REPORTED[(bar_key, job)] = _REPORTED.get((bar_key, job), 0) + rows
        bar.update(rows)

    return advance


def map_shards(plan: ShardPlan, submit: Callable[[ShardJob, str], Any], window: int,
               desc: str) -> Iterator[tuple[ShardJob, Any]]:
    """Run `submit(job, bar_key)` (a Prefect task's `.submit`) for every shard
    the plan still has to make, at most `window` in flight, and yield (job,
    result) in shard order, with one progress bar counted in `job.work`."""
    key = uuid.uuid4().hex
    _BARS[key] = bar = tqdm(total=sum(job.work for job in plan.todo), unit="img", desc=desc)
    try:
        for job, result in submit_windowed(lambda job: submit(job, key), plan.todo, window):
            bar.update(max(0, job.work - _REPORTED.pop((key, job.name), 0)))
            yield job, result
    finally:
        bar.close()
        del _BARS[key]
        for reported in [k for k in _REPORTED if k[0] == key]:
            del _REPORTED[reported]


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
