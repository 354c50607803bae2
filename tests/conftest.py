"""Shared fixtures: tiny configs, the repo root, and the optional ../shared samples."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite runs TensorFlow (sketchKeras tests) and torchvision in one process:
# importing TensorFlow first segfaults, so torch and torchvision load first, here.
import torch  # noqa: F401, E402
import torchvision  # noqa: F401, E402

from pipeline.config import Config, parse_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLES = SHARED / "samples" / "real"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Quiet: the ephemeral server logs its shutdown after pytest has closed its streams.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The ephemeral API server can take over 20 s to start on a busy 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


TINY = {
    "data": {"resolution": 32, "shard_rows": 8, "row_group_rows": 4},
    "ingest": {"toon_count": 20, "min_size": 16, "chunks_in_flight": 2},
    "extract": {"batch_images": 4},
    # fc1 in fp32: what the tests were written for, whatever the defaults become.
    "featurize": {"code": "fc1", "precision": "fp32", "input_size": 32, "augmented_copies": 1,
                  "batch_size": 8},
    "model": {"depth": 2, "base_width": 8, "max_width": 32, "style_proj": 8,
              "disc_width": 8, "disc_depth": 3},
    "train": {"batch_size": 4, "max_steps": 4, "shuffle_buffer": 8, "log_every": 1,
              "sample_every": 2, "checkpoint_every": 2, "monitor_pairs": 2},
    "evaluate": {"pairs": 4, "batch_size": 4},
}


def tiny_config(tmp_path: Path | None = None, **overrides) -> Config:
    """A tiny validated Config; `overrides` are {section: {key: value}} merged in."""
    raw = {k: dict(v) for k, v in TINY.items()}
    if tmp_path is not None:
        raw["data"]["root"] = str(tmp_path / "data")
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return parse_config(raw, "tiny")


@pytest.fixture
def tiny_cfg(tmp_path) -> Config:
    return tiny_config(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def _prefect_home(tmp_path_factory):
    """Each test session gets its own Prefect home (ephemeral API database)."""
    if "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:
        os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    yield


@pytest.fixture
def one_thread():
    """Pin torch to one thread: on a shared 2-core machine tiny steps run far
    faster (and just as deterministically) than with two competing threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_generator(model_cfg, seed: int = 0):
    """A randomly initialised generator whose output depends on the style code, as a
    trained one's does: FiLM starts as the identity, so its weights are drawn here."""
    import torch

    from pipeline.models import build_generator

    torch.manual_seed(seed)
    G = build_generator(model_cfg)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if ".film." in name:
                p.normal_(0, 0.2)
    return G


def export_tiny_generator(root: Path, resolution: int = 32) -> Path:
    """A randomly initialised tiny generator export, root/models/generator.pt + .json,
    recorded as trained at `resolution` with the seeded random style encoder (so
    load it with an empty torch hub, e.g. TORCH_HOME pointing at an empty folder)."""
    from pipeline.models import save_generator

    cfg = tiny_config()
    extra = {"resolution": resolution, "style_encoder": "random",
             "featurize": {"code": "fc1", "precision": "fp32", "weights": None,
                           "input_size": resolution, "seed": 0}}
    return save_generator(tiny_generator(cfg.model), cfg.model, root / "models" / "generator.pt",
                          extra)


def require_samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is absent (only development checkouts have ../shared)")
    return SAMPLES
