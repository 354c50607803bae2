"""Training in separate processes: 2-rank DDP (gloo, CPU) under torchrun, and a
real `kill -9` mid-run followed by a resume. Slow: they start Python processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, tiny_config
from pipeline.jsonio import read_json
from synthetic import write_fake_shards

pytestmark = pytest.mark.slow


def test_two_process_ddp_on_cpu(tmp_path):
    from pipeline.train import launch

    cfg = tiny_config(tmp_path, train={"nproc": 2, "max_steps": 4, "device": "cpu"})
    write_fake_shards(cfg.data_root, 24, 32, shard_rows=8, row_group_rows=4)
    started = time.perf_counter()
    launch.launch(cfg, 2)
    assert time.perf_counter() - started < 60
    metrics = read_json(cfg.data_root / "metrics/train.json")
    assert metrics["world_size"] == 2 and metrics["steps"] == 4
    # 2 ranks x batch 4 per step
    assert metrics["images_per_s"] > 0
    state = torch.load(cfg.data_root / "train/checkpoints/latest.pt", weights_only=True)
    assert state["step"] == 4
    assert (cfg.data_root / "models/generator.pt").is_file()


def _run(cfg_path, env, wait=True):
    cmd = [sys.executable, "-m", "pipeline.train.launch", str(cfg_path)]
    if wait:
        return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def test_kill_9_mid_run_then_rerun_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    train = {"max_steps": 40, "checkpoint_every": 5, "sample_every": 1000, "log_every": 5}
    roots = {}
    for name in ("whole", "killed"):
        cfg = tiny_config(tmp_path / name, train=train)
        write_fake_shards(cfg.data_root, 24, 32, shard_rows=8, row_group_rows=4)
        path = tmp_path / f"{name}.json"
        path.write_text(cfg.model_dump_json())
        roots[name] = (cfg.data_root, path)

    root, path = roots["killed"]
    proc = _run(path, env, wait=False)
    ckpt = root / "train/checkpoints/latest.pt"
    deadline = time.time() + 90
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "finished before it could be killed"
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < 40

    done = _run(path, env)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = read_json(root / "metrics/train.json")
    assert metrics["steps"] == 40 and metrics["resumed_from_step"] == killed_at

    whole = _run(roots["whole"][1], env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    a = torch.load(roots["whole"][0] / "train/checkpoints/latest.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    for part in ("G", "D"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
