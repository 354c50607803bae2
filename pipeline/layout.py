"""Where every stage's outputs live under `data.root`: the one description of
the data tree (dvc.yaml declares the same paths as stage outputs).

    shards/<set>/            Parquet shard sets: color, sketch, style
    rejects.parquet          ingest's rejected inputs
    summary.json             the headline metrics (DVC metrics; pipeline/evaluate/summary.py)
    metrics/<stage>.json     each stage's full record (in git, not DVC metrics)
    models/generator.pt      the exported generator (+ generator.json)
    train/checkpoints/       training state (latest.pt)
    train/samples/           sample grids
    train/dvclive/           training curves
    evaluate/                evaluate's tables and grids
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SHARD_SETS = ("color", "sketch", "style")
STAGE_OF_SET = {"color": "ingest", "sketch": "extract", "style": "featurize"}


@dataclass(frozen=True)
class Layout:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    def shards(self, name: str) -> Path:
        return self.root / "shards" / name

    def metrics(self, stage: str) -> Path:
        return self.root / "metrics" / f"{stage}.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def rejects(self) -> Path:
        return self.root / "rejects.parquet"

    @property
    def generator(self) -> Path:
        return self.root / "models" / "generator.pt"

    @property
    def checkpoint(self) -> Path:
        return self.root / "train" / "checkpoints" / "latest.pt"

    @property
    def train_samples(self) -> Path:
        return self.root / "train" / "samples"

    @property
    def dvclive(self) -> Path:
        return self.root / "train" / "dvclive"

    @property
    def evaluate(self) -> Path:
        return self.root / "evaluate"
