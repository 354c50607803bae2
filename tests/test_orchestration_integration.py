"""Real processes on 127.0.0.1: a Prefect server + process worker running the
pipeline deployment, and `extract` spread over a Dask scheduler + two workers.

Every process is started in its own session and ended by process group in a
`finally`; every wait is bounded. Timings are printed (run with -s to see them).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO, TINY
from tests.project import project_copy, run

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
# The whole tiny DAG; override with e.g. S2P_ORCH_STAGES=ingest,extract.
STAGES = tuple(os.environ.get("S2P_ORCH_STAGES", "ingest,extract,featurize,train,evaluate").split(","))
RUN_TIMEOUT_S = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "S2P_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class Procs:
    """Background processes, each the leader of its own process group."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list, **kw) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.started.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        # Newest first (workers before servers). SIGINT is the clean stop for
        # prefect/dask; a second signal, then SIGKILL, for whatever lingers.
        for _, proc in reversed(self.started):
            _signal_group(proc, signal.SIGINT)
        deadline = time.monotonic() + 10
        for sig in (signal.SIGINT, signal.SIGKILL):
            for _, proc in reversed(self.started):
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(proc, sig)
            deadline = time.monotonic() + 5
        for _, proc in self.started:
            _signal_group(proc, signal.SIGKILL)  # children left in the group
            proc.wait(timeout=5)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@contextmanager
def processes(tmp: Path):
    procs = Procs(tmp)
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


# --- a Prefect server shared by both tests -----------------------------------------


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    with processes(tmp) as procs:
        t0 = time.monotonic()
        server = procs.start(
            "server", [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
            env=base_env(PREFECT_HOME=str(tmp / "home"), PREFECT_UI_ENABLED="false"),
        )

        def healthy():
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "prefect server /api/health", server)
        print(f"\n[timing] prefect server healthy after {time.monotonic() - t0:.1f} s")
        yield {"url": url, "tmp": tmp, "procs": procs,
               "env": base_env(PREFECT_HOME=str(tmp / "client-home"), PREFECT_API_URL=url)}


def dvc_outs(repo: Path, stage: str) -> list[Path]:
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage]
    paths = []
    for key in ("outs", "metrics"):
        for item in spec.get(key) or []:
            paths.append(repo / (item if isinstance(item, str) else next(iter(item))))
    return paths


# --- (a) deployment + worker ---------------------------------------------------------


@pytest.mark.parametrize("stages", [STAGES])
def test_deployment_runs_pipeline_on_process_worker(prefect_server, tmp_path, stages):
    url, procs = prefect_server["url"], prefect_server["procs"]
    env = prefect_server["env"]
    repo = project_copy(tmp_path / "repo")
    pool = "s2p-process"

    t0 = time.monotonic()
    run([BIN / "prefect", "work-pool", "create", pool, "--type", "process"], env=env)
    run([BIN / "prefect", "--no-prompt", "deploy", "--name", "pipeline-local"], env=env, cwd=repo,
        timeout=120)
    t_deployed = time.monotonic()
    deployment = httpx.get(f"{url}/deployments/name/pipeline/pipeline-local", timeout=5).json()
    assert [(s["schedule"]["cron"], s["active"]) for s in deployment["schedules"]] == [("0 3 * * *", False)]
    procs.start("worker", [BIN / "prefect", "worker", "start", "--pool", pool],
                env={**env, "S2P_REPO_DIR": str(repo), "PREFECT_WORKER_QUERY_SECONDS": "1"},
                cwd=tmp_path)
    overrides = {"ingest.toon_count": 12}
    out = run([BIN / "prefect", "deployment", "run", "pipeline/pipeline-local",
               "--param", f"stages={json.dumps(list(stages))}",
               "--param", f"overrides={json.dumps(overrides)}"], env=env)
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)

    def finished():
        try:  # a server busy writing the run's logs may answer late: ask again
            state = httpx.get(f"{url}/flow_runs/{run_id}", timeout=15).json()["state"]
        except httpx.TimeoutException:
            return None
        return state if state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

    state = wait_for(finished, RUN_TIMEOUT_S, f"flow run {run_id}")
    t_done = time.monotonic()
    print(f"\n[timing] work-pool create + deploy {t_deployed - t0:.1f} s; worker start + run of "
          f"{','.join(stages)} {t_done - t_deployed:.1f} s; total {t_done - t0:.1f} s")
    assert state["type"] == "COMPLETED", f"{state}\n--- worker log ---\n{procs.log('worker')[-6000:]}"

    for stage in stages:
        for path in dvc_outs(repo, stage):
            assert path.exists(), f"{stage}: {path} missing"
    assert yaml.safe_load((repo / "params.yaml").read_text())["ingest"]["toon_count"] == 12
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(stages) <= set(lock)
    assert lock["ingest"]["params"]["params.yaml"]["ingest"]["toon_count"] == 12
    status = run([BIN / "dvc", "status", *stages], cwd=repo, env=base_env())
    assert "up to date" in status, status

    artifacts = httpx.post(f"{url}/artifacts/filter", timeout=5, json={
        "artifacts": {"key": {"any_": ["s2p-pipeline"]}, "flow_run_id": {"any_": [run_id]}}}).json()
    (artifact,) = artifacts
    for stage in stages:
        assert f"| {stage} | ran |" in artifact["data"], artifact["data"]
    if "evaluate" in stages:  # the headline, the one DVC metrics file
        assert "| data/summary.json | de |" in artifact["data"], artifact["data"]
    # Each stage's own flow reported to the same server, tagged with the pipeline
    # run's id, and the artifact links them (issue 11, item 6).
    flows = {f["id"]: f["name"] for f in httpx.post(f"{url}/flows/filter", timeout=5, json={}).json()}
    tagged = httpx.post(f"{url}/flow_runs/filter", timeout=5, json={
        "flow_runs": {"tags": {"all_": [f"pipeline-run:{run_id}"]}}}).json()
    assert sorted(flows[r["flow_id"]] for r in tagged) == sorted(stages), tagged
    assert "## Stage flow runs (Prefect)" in artifact["data"]
    for r in tagged:
        assert r["id"] in artifact["data"] or r["name"] in artifact["data"]

    # The README's way to turn the nightly schedule on.
    schedule_id = deployment["schedules"][0]["id"]
    run([BIN / "prefect", "deployment", "schedule", "resume", "pipeline/pipeline-local", schedule_id],
        env=env)
    deployment = httpx.get(f"{url}/deployments/name/pipeline/pipeline-local", timeout=5).json()
    assert [s["active"] for s in deployment["schedules"]] == [True]


# --- (b) extract over a Dask scheduler + two workers ---------------------------------


def _params(root: Path, **runner) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params.setdefault(section, {}).update(values)
    params["data"]["root"] = str(root)
    # classical: deterministic and cheap; what is under test is where tasks run.
    params["extract"].update(method="classical", runner={"kind": "inprocess", **runner})
    path = root.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _stage(stage: str, params: Path, env: dict) -> float:
    t0 = time.monotonic()
    run([sys.executable, "-m", "stages", stage], env={**env, "S2P_PARAMS": str(params)}, cwd=REPO,
        timeout=150)
    return time.monotonic() - t0


def test_extract_on_dask_workers_matches_inprocess(prefect_server, tmp_path):
    env = {**prefect_server["env"], "PYTHONPATH": str(REPO)}
    procs = prefect_server["procs"]
    local, remote = tmp_path / "local", tmp_path / "dask"
    t_ingest = _stage("ingest", _params(local), env)
    shutil.copytree(local / "shards" / "color", remote / "shards" / "color")
    t_local = _stage("extract", _params(local), env)

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    t0 = time.monotonic()
    procs.start("dask-scheduler", [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", port,
                                   "--no-dashboard"], env=env, cwd=REPO)
    for i in (1, 2):
        # Workers import the project (PYTHONPATH) and report task runs to the same
        # Prefect server as the flow (PREFECT_API_URL in env).
        procs.start(f"dask-worker-{i}", [BIN / "dask", "worker", address, "--nworkers", "1",
                                         "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                                         "--name", f"w{i}"], env=env, cwd=REPO)
    from distributed import Client

    with Client(address, timeout=30) as client:
        wait_for(lambda: len(client.scheduler_info()["workers"]) >= 2, 60, "two dask workers")
        t_cluster = time.monotonic() - t0
        # runner.address null: the address comes from $S2P_DASK_ADDRESS.
        t_dask = _stage("extract", _params(remote, kind="dask_address"),
                        {**env, "S2P_DASK_ADDRESS": address})
    print(f"\n[timing] ingest {t_ingest:.1f} s; extract in-process {t_local:.1f} s; dask cluster up "
          f"{t_cluster:.1f} s; extract on 2 dask workers {t_dask:.1f} s")

    local_shards = sorted((local / "shards" / "sketch").glob("shard-*.parquet"))
    dask_shards = sorted((remote / "shards" / "sketch").glob("shard-*.parquet"))
    assert len(local_shards) >= 2
    assert [p.name for p in dask_shards] == [p.name for p in local_shards]
    for a, b in zip(local_shards, dask_shards):
        assert a.read_bytes() == b.read_bytes(), f"{b.name} differs from the in-process run"
    # The shard tasks really ran on the Dask workers, not in the flow's process.
    worker_logs = procs.log("dask-worker-1") + procs.log("dask-worker-2")
    assert len(re.findall(r"Task run 'extract_shard-\w+' - Finished in state Completed", worker_logs)) \
        == len(local_shards), worker_logs[-4000:]
