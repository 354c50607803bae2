"""The distributed primitives the training loop uses: this process's place in
a torchrun job, its device, the process group, and the collective decisions.
A plain process is rank 0 of 1 and every call here is then a no-op.
Backend: nccl on CUDA (one GPU per process), gloo on CPU. The launcher is
launch.py."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.config import Config, ConfigError


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
