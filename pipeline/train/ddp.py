"""Multi-process training with torch DDP, launched through torchrun.

`train.nproc > 1`: the stage process starts
`python -m torch.distributed.run --standalone --nproc_per_node N -m pipeline.train.ddp cfg.json`
and waits; each of the N processes reads the same validated config from the
JSON file and runs `loop.train`. Backend: nccl on CUDA (one GPU per process),
gloo on CPU. Rank 0 alone logs, writes samples, checkpoints and the export.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline.config import Config, ConfigError, parse_config

log = logging.getLogger("s2p.train.ddp")
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The process's place in a torchrun job (a plain process is rank 0 of 1)."""
    return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                int(os.environ.get("WORLD_SIZE", 1)))


def select_device(cfg: Config, d: Dist) -> torch.device:
    want = cfg.train.device
    has_cuda = torch.cuda.is_available()
    if want == "cuda" and not has_cuda:
        raise ConfigError("params.yaml: train.device: cuda, but no CUDA device is visible")
    if want == "auto":
        want = "cuda" if has_cuda else "cpu"
    if want == "cpu":
        return torch.device("cpu")
    if d.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"params.yaml: train.nproc: process {d.local_rank} has no GPU "
            f"({torch.cuda.device_count()} visible)"
        )
    torch.cuda.set_device(d.local_rank)
    return torch.device("cuda", d.local_rank)


def init(d: Dist, device: torch.device) -> None:
    if d.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one (a shared stop decision)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


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
           f"--nproc_per_node={nproc}", "-m", "pipeline.train.ddp", fh.name]
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
    cfg = parse_config(__import__("json").loads(Path(config_json).read_text()), config_json)
    train(cfg)


if __name__ == "__main__":
    _worker(sys.argv[1])
