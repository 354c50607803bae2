"""`kill -9` of a stage mid-write, then a rerun: no temporary file is left in the
DVC-tracked shard folder, and the shards equal an uninterrupted run's, byte for
byte. One test per stage that writes shards through the shard map (ingest,
extract, featurize).

The stage runs as DVC runs it (`python -m stages <name>`) with one addition: a
wrapper around `os.replace` that, when the second shard is about to be renamed
into the shard folder (ingest's part files under the hidden `.parts/` do not count) (its temporary file complete on disk), sends SIGKILL to the stage's
process group (the stage and the Prefect server it started), so the kill lands
at that exact point. (Stopping with SIGSTOP and killing from the test is racy:
the kernel continues a stopped process whose group becomes orphaned.)
"""
from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY, tiny_config

STOP_AT_SECOND_SHARD = """
import os, signal, runpy, sys
_replace = os.replace
_shards = []
def replace(src, dst, *args, **kwargs):
    if "/shards/" in str(dst) and str(dst).endswith(".parquet") and "/." not in str(dst):
        _shards.append(dst)
        if len(_shards) == 2:
            with open(os.environ["S2P_TEST_STOPPED"], "w") as fh:
                fh.write(str(src))
            os.killpg(0, signal.SIGKILL)  # kill -9 of the stage and its Prefect server
    return _replace(src, dst, *args, **kwargs)
os.replace = replace
sys.argv = ["stages", sys.argv[1]]
runpy.run_module("stages", run_name="__main__")
"""
UPSTREAM = {"ingest": [], "extract": ["ingest"], "featurize": ["ingest"]}
OUTPUT = {"ingest": "color", "extract": "sketch", "featurize": "style"}


def run_in_process(stage: str, cfg) -> None:
    from stages.common import STAGES

    check, body = STAGES[stage]
    for target in (check, body):
        module, name = target.split(":")
        getattr(importlib.import_module(module), name)(cfg)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ingest", "extract", "featurize"])
def test_kill_9_mid_write_then_rerun_equals_an_uninterrupted_run(stage, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # random VGG weights, here and there
    raw = {k: dict(v) for k, v in TINY.items()}
    raw["data"]["root"] = str(tmp_path / "data")
    raw["extract"]["method"] = "classical"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    cfg = tiny_config(tmp_path, extract={"method": "classical"})
    for upstream in UPSTREAM[stage]:
        run_in_process(upstream, cfg)
    out = cfg.layout.shards(OUTPUT[stage])
    run_in_process(stage, cfg)
    uninterrupted = files(out)
    assert len([n for n in uninterrupted if n.startswith("shard-")]) == 3
    shutil.rmtree(out)

    stopped = tmp_path / "stopped"
    env = dict(os.environ, S2P_PARAMS=str(params), S2P_TEST_STOPPED=str(stopped),
               PREFECT_LOGGING_LEVEL="WARNING")
    log = (tmp_path / "stage.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", STOP_AT_SECOND_SHARD, stage], cwd=REPO,
                            env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:  # it never reached its second shard
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stage.log").read_text()[-3000:]
    temporary = Path(stopped.read_text())
    assert temporary.parent == out and temporary.is_file()  # what the kill left behind
    assert [p.name for p in out.glob("shard-*.parquet")] == ["shard-00000.parquet"]

    run_in_process(stage, cfg)
    assert not list(out.glob(".*")), "temporary files left in the DVC-tracked folder"
    assert files(out) == uninterrupted
