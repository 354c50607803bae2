"""Atomic JSON files (metrics, sidecars): readers never see half a file."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path, default: dict | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        if default is not None:
            return default
        raise FileNotFoundError(f"{path}: not found")
    return json.loads(path.read_text())
