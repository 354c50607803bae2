"""Generator export: `generator.pt` (state_dict) + `generator.json` (how to rebuild it).

The .pt holds tensors only, so `torch.load(weights_only=True)` reads it safely.
The .json holds {"format", "format_version", "model": ModelConfig fields} plus the
caller's `extra` keys at the top level (resolution, featurize settings, the
sketch extractor used...). `load_generator` rebuilds the network from the json,
so a checkpoint whose tensors do not fit its own config is reported, not guessed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn as nn
from pydantic import ValidationError

from pipeline.config import ModelConfig
from pipeline.jsonio import atomic_path, write_json
from pipeline.models.generator import Generator

FORMAT = "s2p-generator"
FORMAT_VERSION = 2  # 2: style code variants, FiLM (issue 10)
_RESERVED = {"format", "format_version", "model"}


class CheckpointError(ValueError):
    """A generator checkpoint that cannot be loaded; the message names the file."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP (`.module`) and torch.compile (`._orig_mod`)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel) or (
            type(model).__name__ == "DataParallel"
        ):
            model = model.module
        else:
            return model


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        path = path / "generator.pt"
    return path, path.with_suffix(".json")


def save_generator(G: nn.Module, model_cfg: ModelConfig, path: str | Path,
                   extra: dict | None = None) -> Path:
    """Write `path` (.pt state_dict) and its .json sidecar, each atomically."""
    pt_path, json_path = _paths(path)
    clash = _RESERVED & set(extra or {})
    if clash:
        raise ValueError(f"save_generator: extra may not use reserved keys {sorted(clash)}")
    pt_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in unwrap(G).state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "model": model_cfg.model_dump(), **(extra or {})}
    with atomic_path(pt_path) as tmp:
        torch.save(state, tmp)
    write_json(json_path, meta)
    return pt_path


def load_generator(path: str | Path, map_location="cpu") -> tuple[Generator, dict]:
    """(Generator in eval mode, metadata dict) or `CheckpointError` naming the file."""
    pt_path, json_path = _paths(path)
    for p in (pt_path, json_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: not found (a generator export is generator.pt + .json)")
    try:
        meta = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{json_path}: not valid JSON ({err})") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path}: format {meta.get('format')!r} v{meta.get('format_version')}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}"
        )
    try:
        cfg = ModelConfig.model_validate(meta.get("model") or {})
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(f"{json_path}: model.{key}: {first['msg']}") from None
    state = load_tensors(pt_path, map_location)
    G = Generator(cfg)
    _check_state(G, state, pt_path)
    G.load_state_dict(state)
    return G.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval(), meta


def load_tensors(path: Path, map_location="cpu"):
    """`torch.load(weights_only=True)`: tensors and plain containers only, never
    code. Any failure is a `CheckpointError` of one complete line (torch's own
    message is a page of advice, which a cut would leave mid-warning)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a bad file
        raise CheckpointError(f"{path}: {_load_failure(err)}") from None


def _load_failure(err: Exception) -> str:
    text = str(err)
    if "Weights only load failed" not in text:
        detail = f": {_first_sentence(text)}" if text.strip() else ""
        return f"cannot read ({type(err).__name__}{detail})"
    code = re.search(r"GLOBAL (\S+)", text)
    if code:
        return (f"refused: loading it would run Python code ({code.group(1)}), so it was not "
                "loaded; it may be malicious")
    # Past torch's first paragraph of advice: what the unpickler found instead.
    found = [ln for ln in text.splitlines()[1:] if ln.strip() and "error:" not in ln
             and not ln.startswith(("Check the documentation", "Please file"))]
    return f"cannot read (not a file of tensors: {_first_sentence(found[0]) if found else '?'})"


def _first_sentence(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return re.split(r"(?<=[.!?])\s", line)[0][:200]


def _check_state(G: nn.Module, state: dict, pt_path: Path) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{pt_path}: not a state_dict")
    own = G.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: file "
                         f"{tuple(state[k].shape)}, config {tuple(own[k].shape)})")
        raise CheckpointError(
            f"{pt_path}: incompatible with the model config in its .json: " + "; ".join(parts)
        )
