"""The one entry point of every DVC stage: `python -m stages <name>`.

This module is imported first (by `stages/__main__.py`): Prefect reads its
settings once, when it is imported, so the environment below has to be in
place before then.

`run_stage("ingest")`
  1. validates params.yaml, then runs the stage's own checks of what params ask
     of this machine (`STAGES[name][0]`: a library function that imports neither
     Prefect nor torch nor TensorFlow: an input folder, weights, upstream
     outputs), all before the stage's flow module is imported, so a bad config
     fails in about a second with one line naming the key (exit 2); a
     `ConfigError` raised by the stage itself later is one line, exit 2 too;
  2. stops within `STOP_GRACE_S` seconds of SIGINT (Ctrl-C) or SIGTERM with
     status 130 or 143 (see `stop_on_signals`).
"""
from __future__ import annotations

import os

# Prefect runs offline in ephemeral mode unless PREFECT_API_URL points at a server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
# The ephemeral API server can take over 20 s to start on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import contextlib  # noqa: E402
import importlib  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from pipeline.config import ConfigError, load_config  # noqa: E402
from pipeline.logs import (PIPELINE_RUN_ENV, lines_for_pipes, pipeline_tag,  # noqa: E402
                          setup_logging)

# stage -> (its checks of params against this machine, its flow's entry), as
# "module:function". dvc.yaml runs `python -m stages <stage>` for each.
STAGES = {
    "ingest": ("pipeline.ingest:check_params", "flows.ingest:ingest"),
    "extract": ("pipeline.sketch:check_params", "flows.extract:extract"),
    "featurize": ("pipeline.featurize:check_params", "flows.featurize:featurize"),
    "train": ("pipeline.train:check_params", "flows.train:train"),
    "evaluate": ("pipeline.evaluate:check_params", "flows.evaluate:evaluate"),
}
STOP_GRACE_S = 5.0
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number
_received: list[int] = []  # the first stop signal, once one arrived
_exit_lock = threading.Lock()


def main(argv: list[str]) -> None:
    """`python -m stages <name>`."""
    if len(argv) != 1 or argv[0] not in STAGES:
        print(f"usage: python -m stages {{{'|'.join(STAGES)}}}", file=sys.stderr)
        raise SystemExit(2)
    run_stage(argv[0])


def run_stage(stage: str, params: str = "params.yaml") -> None:
    """Run `stage` (a key of STAGES) on the params ($S2P_PARAMS overrides the path)."""
    check, body = (_function(target) for target in STAGES[stage])
    lines_for_pipes()  # before Prefect makes its handlers: they write to sys.stderr
    setup_logging()
    stop_on_signals(stage)
    try:
        cfg = load_config(os.environ.get("S2P_PARAMS", params))
        check()(cfg)
        with _pipeline_tags():
            body()(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        # Prefect has recorded the run as crashed; leave without waiting on
        # task threads that cannot be interrupted.
        exit_now(_received[0] if _received else signal.SIGINT)


def _pipeline_tags():
    """Under the pipeline flow, tag this stage's Prefect flow run with the pipeline
    run's id, so the UI (and the run's artifact) lead from a pipeline run to its stages."""
    run_id = os.environ.get(PIPELINE_RUN_ENV)
    if not run_id:
        return contextlib.nullcontext()
    from prefect import tags

    return tags(pipeline_tag(run_id), "s2p-stage")


def _function(target: str):
    """A loader of "module:function", so the module is imported only when called."""
    module, name = target.split(":")
    return lambda: getattr(importlib.import_module(module), name)


def stop_on_signals(stage: str) -> None:
    """Make SIGINT and SIGTERM stop the stage promptly, whatever it is doing.

    The signal raises KeyboardInterrupt in the main thread (Prefect then marks
    the run crashed), and a watchdog thread ends the process `STOP_GRACE_S`
    later if it is still alive: Ctrl-C reaches the temporary Prefect server
    too, and the engine would retry the dead API for minutes, and a task
    running in a worker thread cannot be interrupted at all. A second signal
    ends it at once. The watchdog learns of the signal through the wakeup fd,
    which Python writes for every handled signal, so it also fires while
    Prefect has its own SIGTERM handler installed during a flow run.

    Every shard and checkpoint is written to a temporary name and renamed, so
    stopping anywhere leaves finished work in place and the next run resumes
    (and removes the temporary files a hard stop leaves behind).
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in EXIT_STATUS:
        signal.signal(signum, _interrupt)
    threading.Thread(target=_watchdog, args=(read_fd, stage), name="s2p-stop",
                     daemon=True).start()


def _interrupt(signum, frame) -> None:
    _record(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _record(signum: int) -> None:
    if not _received:  # the first signal decides the exit status
        _received.append(signum)


def _watchdog(read_fd: int, stage: str) -> None:
    deadline = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if not ready:  # the grace period is over
            exit_now(_received[0])
        for signum in os.read(read_fd, 64):
            if signum not in EXIT_STATUS:
                continue
            _record(signum)
            if deadline is not None:  # a second signal
                exit_now(_received[0])
            deadline = time.monotonic() + STOP_GRACE_S
            print(f"{stage}: {signal.Signals(signum).name} received, stopping; finished shards "
                  "and checkpoints are kept, run the stage again to resume", file=sys.stderr,
                  flush=True)


def exit_now(signum: int) -> None:
    """End this process and the processes it started (the temporary Prefect
    server, local Dask workers, torchrun) with 128 + the signal's number."""
    import psutil

    with _exit_lock:
        children = psutil.Process().children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.Error):  # already gone
                child.terminate()
        _, alive = psutil.wait_procs(children, timeout=2)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STATUS[signum])
