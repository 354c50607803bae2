"""Nothing the project starts listens beyond this machine unless asked to: a Dask
scheduler runs whatever code it is sent, and its dashboard shows every task."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import psutil
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def listening(processes) -> set[tuple[int, str, int]]:
    """(pid, ip, port) of every listening TCP socket of `processes`."""
    found = set()
    for proc in processes:
        try:
            for conn in proc.net_connections("inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((proc.pid, conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            pass
    return found


def family(proc: psutil.Process) -> list[psutil.Process]:
    return [proc, *proc.children(recursive=True)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_dask_cluster_listens_on_loopback_only():
    from distributed import LocalCluster

    from flows.runner import local_cluster_kwargs
    from pipeline.config import TaskRunnerConfig

    me = psutil.Process()
    before = listening(family(me))
    with LocalCluster(**local_cluster_kwargs(TaskRunnerConfig(kind="local_dask", workers=1))):
        opened = listening(family(me)) - before
    assert len(opened) >= 4  # scheduler, its dashboard, the nanny, the worker
    assert {ip for _, ip, _ in opened} == {"127.0.0.1"}, opened


def _make(target: str, log, **variables) -> subprocess.Popen:
    # -o: never rebuild the venv from a test (`make test` has just installed it).
    cmd = ["make", "-s", "-o", ".venv/.installed", target,
           *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def test_make_dask_scheduler_and_worker_listen_on_loopback_only(tmp_path):
    port, dashboard = free_port(), free_port()
    log = (tmp_path / "dask.log").open("w")
    started = [_make("dask-scheduler", log, DASK_PORT=port, DASK_DASHBOARD_PORT=dashboard)]
    try:
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, (tmp_path / "dask.log").read_text()
            time.sleep(0.2)
        started.append(_make("dask-worker", log, DASK_ADDRESS=f"tcp://127.0.0.1:{port}"))
        while (tmp_path / "dask.log").read_text().count("Register worker") < 2:
            assert time.monotonic() < deadline, (tmp_path / "dask.log").read_text()
            time.sleep(0.2)
        sockets = listening([p for make in started for p in family(psutil.Process(make.pid))])
    finally:
        for make in started:
            os.killpg(make.pid, signal.SIGTERM)
        for make in started:
            try:
                make.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
    ports = {p for _, _, p in sockets}
    assert {port, dashboard} <= ports
    assert len(sockets) >= 6  # scheduler + dashboard, 2 x (nanny, worker, worker dashboard)
    assert {ip for _, ip, _ in sockets} == {"127.0.0.1"}, sockets


def _dry_run(target: str, **variables) -> str:
    cmd = ["make", "-s", "-n", "-o", ".venv/.installed", target,
           *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout


def test_make_targets_take_every_port_from_one_variable():
    """Issue 11, item 8: the UI calls the port it is served on; the scheduler's port
    follows DASK_ADDRESS like the workers'; both dashboards can be set."""
    server = _dry_run("server", PREFECT_PORT=4317)
    assert "PREFECT_UI_API_URL=http://127.0.0.1:4317/api" in server and "--port 4317" in server
    scheduler = _dry_run("dask-scheduler", DASK_ADDRESS="tcp://127.0.0.1:9911",
                         DASK_DASHBOARD_PORT=9912)
    assert "--port 9911" in scheduler and "--dashboard-address 127.0.0.1:9912" in scheduler
    worker = _dry_run("dask-worker", DASK_ADDRESS="tcp://127.0.0.1:9911",
                      DASK_WORKER_DASHBOARD_PORT=9913)
    assert "tcp://127.0.0.1:9911" in worker and "--dashboard-address 127.0.0.1:9913" in worker
    assert "--port 8800" in _dry_run("dask-scheduler", DASK_PORT=8800)  # the old way still works
