"""Training checkpoints: everything a resumed run needs, loadable with weights_only.

`latest.pt` holds G, D, both optimisers, the step, the training seconds spent
so far, a summary (recent losses, images/s) for the metrics, the RNG states
(torch CPU/CUDA as tensors, numpy and python as plain lists), the config as
JSON, and a fingerprint of what must not change for a resume to be the same
run (model, data, the parts of train that shape the stream and the
optimisation). The data loader's position is not stored: the stream is a
function of (seed, step), see `loader.py`.

Written to a temporary file and renamed, so a `kill -9` leaves either the old
checkpoint or the new one, never half of one (and a temporary file, which the
next run removes). A run that starts over never deletes the previous
checkpoint: its own first checkpoint replaces it. An unreadable checkpoint
stops the run with one line (`CheckpointUnreadable`) instead of being replaced.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Config
from pipeline.jsonio import atomic_path
from pipeline.models.export import CheckpointError, load_tensors
from pipeline.shards import remove_partial_writes
from pipeline.train.loader import STREAM_VERSION, shard_dirs

log = logging.getLogger("s2p.train.checkpoint")

FORMAT_VERSION = 1

# train.* keys that may change between a run and its resume (budget, cadence,
# speed knobs). Everything else in train, model and data.resolution must match.
RESUMABLE_CHANGES = {"max_steps", "max_minutes", "log_every", "sample_every",
                     "checkpoint_every", "compile", "amp", "channels_last", "device"}


def run_identity(cfg: Config) -> dict:
    """What a checkpoint must agree with to be resumed by `cfg`."""
    train = {k: v for k, v in cfg.train.model_dump().items() if k not in RESUMABLE_CHANGES}
    data = {}
    for d in shard_dirs(cfg.data_root):
        manifest = d / "_manifest.json"
        data[d.name] = (hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
                        if manifest.is_file() else None)
    return {"model": cfg.model.model_dump(), "resolution": cfg.data.resolution,
            "train": train, "data": data, "stream": STREAM_VERSION}


def identity_diff(a: dict, b: dict, prefix: str = "") -> str | None:
    """First differing key of two identities, as 'key: old != new', or None."""
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = identity_diff(va, vb, f"{prefix}{key}.")
            if sub:
                return sub
        elif va != vb:
            return f"{prefix}{key}: {va!r} != {vb!r}"
    return None


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_list(np.random.get_state()),
        "python": _python_state_to_list(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_state_from_list(state["numpy"]))
    random.setstate(_python_state_from_list(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _numpy_state_to_list(st) -> list:
    name, keys, pos, has_gauss, cached = st
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _numpy_state_from_list(st: list):
    name, keys, pos, has_gauss, cached = st
    return name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached


def _python_state_to_list(st) -> list:
    version, internal, gauss = st
    return [version, list(internal), gauss]


def _python_state_from_list(st: list):
    version, internal, gauss = st
    return version, tuple(internal), gauss


def save_checkpoint(path: str | Path, *, G, D, opt_g, opt_d, step: int, seconds: float,
                    cfg: Config, identity: dict, summary: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "seconds": float(seconds),
        "G": G.state_dict(),
        "D": D.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "rng": rng_state(),
        "config": cfg.model_dump_json(),
        "identity": json.dumps(identity, sort_keys=True),
        "summary": json.dumps(summary or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


class CheckpointMismatch(ValueError):
    """A readable checkpoint from another run (other model, data or settings)."""


class CheckpointUnreadable(ValueError):
    """A checkpoint that cannot be read (damaged, or refused as unsafe): one line."""


def load_checkpoint(path: str | Path, identity: dict, map_location="cpu") -> dict:
    """The checkpoint dict; `CheckpointMismatch` when it belongs to another run,
    `CheckpointUnreadable` naming the file when it cannot be read."""
    path = Path(path)
    try:
        state = load_tensors(path, map_location)
    except CheckpointError as err:
        raise CheckpointUnreadable(f"{err}; move it away to start training over") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointMismatch(f"{path}: not a format-{FORMAT_VERSION} training checkpoint")
    diff = identity_diff(json.loads(state["identity"]), identity)
    if diff:
        raise CheckpointMismatch(f"{path}: trained with other settings ({diff})")
    return state


def remove_killed_saves(*paths: Path) -> None:
    """Remove the temporary files a killed save left next to each of `paths` (the
    checkpoint, the generator export): they would change the hash of the
    DVC-tracked folder. The files themselves stay."""
    for folder in {Path(p).parent for p in paths}:
        if folder.is_dir():
            remove_partial_writes(folder)


def losses_to_json(window) -> list[dict[str, float]]:
    """The final-loss window (per-step dicts of scalar tensors) for the checkpoint's
    summary, so a resumed run averages the same steps an uninterrupted one does."""
    return [{k: float(v) for k, v in terms.items()} for terms in window]


def losses_from_json(summary: dict, device) -> list[dict[str, torch.Tensor]]:
    return [{k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in terms.items()}
            for terms in summary.get("loss_window", [])]
