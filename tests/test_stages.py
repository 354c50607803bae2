"""The stage entry point (`python -m stages <name>`): one-line config errors, Prefect's environment,
and a prompt, resumable stop on SIGINT/SIGTERM. These start real stage processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import REPO, TINY


def stage_env(params: Path) -> dict:
    return dict(os.environ, S2P_PARAMS=str(params), PREFECT_LOGGING_LEVEL="WARNING")


def write_params(tmp_path: Path, **sections) -> Path:
    raw = {k: dict(v) for k, v in TINY.items()}
    raw["data"]["root"] = str(tmp_path / "data")
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_prefect_startup_timeout_is_set_before_prefect_reads_it():
    """Prefect reads its settings when first imported: the stage script must set
    the environment before its flow module (which imports Prefect) is loaded."""
    env = {k: v for k, v in os.environ.items()
           if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    code = (
        "import stages.common\n"  # what `python -m stages` imports first
        "import flows.ingest\n"  # what run_stage imports after validation
        "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as T\n"
        "print(T.value())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.split()[-1] == "120"


BAD_PARAMS = {
    "folder": (None, "is a folder, not a params file"),
    "latin1": (b"data: {root: caf\xe9}\n", "not UTF-8 text"),
    "empty": (b"", "empty file"),
    "duplicate_section": (b"train: {batch_size: 2}\ntrain: {seed: 1}\n", "duplicate key 'train'"),
    "string_int": (b"data: {resolution: '64'}\n", "data.resolution: Input should be a valid integer"),
    "float_int": (b"train: {batch_size: 50.0}\n", "train.batch_size"),
    "bool_int": (b"train: {batch_size: true}\n", "train.batch_size"),
    "infinite_lr": (b"train: {lr_g: .inf}\n", "train.lr_g: Input should be a finite number"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_params_file_is_one_line_exit_2(tmp_path, case):
    content, message = BAD_PARAMS[case]
    params = tmp_path / "params.yaml"
    if content is None:
        params.mkdir()
    else:
        params.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "stages", "ingest"], cwd=REPO, env=stage_env(params),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {params}: "), proc.stderr
    assert message in lines[0]


def test_missing_ingest_folder_is_one_line_exit_2(tmp_path):
    params = write_params(tmp_path, ingest={"source": "folder", "folder": str(tmp_path / "gone")})
    proc = subprocess.run([sys.executable, "-m", "stages", "ingest"], cwd=REPO, env=stage_env(params),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: params.yaml: ingest.folder: {tmp_path / 'gone'}: no such folder")
    assert not (tmp_path / "data").exists()


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, "the stage ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} did not appear in {seconds} s"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_signal_stops_the_stage_promptly_and_a_rerun_resumes(tmp_path, how):
    """Ctrl-C (SIGINT to the whole process group: the temporary Prefect server
    gets it too) or SIGTERM to the stage alone: the stage and the processes it
    started are gone within 10 s, with status 130/143, and a rerun resumes."""
    params = write_params(tmp_path, ingest={"toon_count": 1000})
    shard_dir = tmp_path / "data" / "shards" / "color"
    log = (tmp_path / "stage.log").open("w")  # not a pipe: nothing may block on it
    proc = subprocess.Popen([sys.executable, "-m", "stages", "ingest"], cwd=REPO,
                            env=stage_env(params), stdout=log, stderr=log,
                            start_new_session=True)
    try:
        _wait_for(shard_dir / "shard-00002.parquet", proc, 180)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "expected the temporary Prefect server as a child"
        if how == "ctrl_c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        sent = time.monotonic()
        rc = proc.wait(timeout=10)
        stopped_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = (tmp_path / "stage.log").read_text()
    assert rc == (130 if how == "ctrl_c" else 143), stderr
    assert stopped_after < 10
    assert "received, stopping" in stderr
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert 3 <= len(list(shard_dir.glob("shard-*.parquet"))) < 1000 // 8

    if how == "sigterm":
        return  # resuming is the same as after Ctrl-C
    rerun = subprocess.run([sys.executable, "-m", "stages", "ingest"], cwd=REPO,
                           env=stage_env(params), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming" in rerun.stderr
    metrics = json.loads((tmp_path / "data" / "metrics" / "ingest.json").read_text())
    assert metrics["images"] == 1000 and metrics["shards"] == 1000 // 8
    assert 0 < metrics["inputs_processed_this_run"] < 1000
    assert not list(shard_dir.glob(".*"))


NOTHING_TO_RUN_ON = {
    "ingest": ({"ingest": {"source": "folder", "folder": "/nonexistent"}}, "no such folder"),
    "extract": ({"extract": {"method": "sketchkeras", "weights": "/nonexistent/mod.h5"}},
                "extract.weights: /nonexistent/mod.h5 not found"),
    "featurize": ({"featurize": {"runner": {"kind": "dask_address"}}}, "no colour shards"),
    "train": ({}, "_manifest.json: not found (run the ingest stage first)"),
    "evaluate": ({}, "generator.pt: not found (run the train stage first)"),
}
HEAVY = ("prefect", "torch", "tensorflow", "keras")


@pytest.mark.parametrize("stage", sorted(NOTHING_TO_RUN_ON))
def test_config_errors_come_before_prefect_torch_or_tensorflow_is_imported(tmp_path, stage):
    """What params ask of this machine (a folder, weights, upstream outputs) is
    checked by the stage's library before its flow module is imported: the
    one-line error comes in about a second (README: Reliability)."""
    sections, message = NOTHING_TO_RUN_ON[stage]
    params = write_params(tmp_path, **sections)
    code = ("import runpy, sys\n"
            f"sys.argv = ['stages', {stage!r}]\n"
            "try:\n    runpy.run_module('stages', run_name='__main__')\n"
            "finally:\n"
            f"    print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=stage_env(params),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.strip() == "[]", f"imported before the error: {proc.stdout}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_unknown_stage_is_usage_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "stages", "nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "usage: python -m stages {ingest|extract|featurize|train|evaluate}"
