"""Task granularity and thread settings of the fan-out stages (flows/runner.py)."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO
from pipeline.config import TaskRunnerConfig


def runner(kind: str, workers: int = 2, threads: int = 1) -> TaskRunnerConfig:
    return TaskRunnerConfig(kind=kind, workers=workers, threads_per_worker=threads)


def test_dask_keeps_two_tasks_per_worker_in_flight():
    from flows.runner import in_flight

    assert in_flight(runner("inprocess"), 2) == 2
    assert in_flight(runner("local_dask", workers=2), 2) == 4
    assert in_flight(runner("dask_address", workers=8), 4) == 16
    assert in_flight(runner("local_dask", workers=1), 6) == 6  # never fewer than asked


def test_only_dask_tasks_are_held_to_their_threads():
    from flows.runner import worker_threads

    assert worker_threads(runner("inprocess", threads=3)) is None
    assert worker_threads(runner("local_dask", threads=3)) == 3
    assert worker_threads(runner("dask_address", threads=1)) == 1


def test_limit_threads_holds_torch_and_opencv():
    # In a fresh process: thread pools are per process, and this one's must stay as they are.
    code = ("import torch, cv2\n"
            "from flows.runner import limit_threads\n"
            "limit_threads(None)\n"
            "before = (torch.get_num_threads(), cv2.getNumThreads())\n"
            "limit_threads(1)\n"
            "print(before, (torch.get_num_threads(), cv2.getNumThreads()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = out.stdout.strip().rsplit(" (", 1)
    assert after == "1, 1)"
    if len(os.sched_getaffinity(0)) > 1 and "OMP_NUM_THREADS" not in os.environ:
        assert before != "(1, 1)"  # it changed something
