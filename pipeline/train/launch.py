"""Multi-process training with torch DDP, launched through torchrun.

`train.nproc > 1`: the stage process starts
`python -m torch.distributed.run --standalone --nproc_per_node N -m pipeline.train.launch cfg.json`
and waits; each of the N processes reads the same validated config from the
JSON file and runs `loop.train` (which finds its rank through distributed.py).
Rank 0 alone logs, writes samples, checkpoints and the export.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from pipeline.config import Config, ConfigError, parse_config

log = logging.getLogger("s2p.train.launch")
REPO = Path(__file__).resolve().parents[2]


def launch(cfg: Config, nproc: int) -> None:
    """Run training in `nproc` processes under torchrun; raise if any fails."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cfg.train.device != "cpu" and gpus and nproc > gpus:
        raise ConfigError(
            f"params.yaml: train.nproc: {nproc} processes but {torch.cuda.device_count()} GPU(s)"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="s2p-train-", delete=False) as fh:
        fh.write(cfg.model_dump_json())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # One intra-op thread per process unless the user chose otherwise: N
    # processes each using every core would oversubscribe the CPU.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "pipeline.train.launch", fh.name]
    log.info("train: launching %d processes: %s", nproc, " ".join(cmd))
    try:
        rc = subprocess.run(cmd, env=env, cwd=Path.cwd()).returncode
    finally:
        os.unlink(fh.name)
    if rc:
        raise RuntimeError(f"train: torchrun exited with status {rc} (see the log above)")


def _worker(config_json: str) -> None:
    from pipeline.logs import setup_logging
    from pipeline.train.loop import train

    setup_logging()
    cfg = parse_config(json.loads(Path(config_json).read_text()), config_json)
    train(cfg)


if __name__ == "__main__":
    _worker(sys.argv[1])
