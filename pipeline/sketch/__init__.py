"""Sketch extraction: colour illustration -> black-on-white line art.

`make_extractor(cfg.extract)` returns the extractor that params ask for:
  method sketchkeras  the sketchKeras network with the weights at extract.weights
                      (missing or mismatched weights: ConfigError, never a fallback);
  method classical    a classical extractor (extract.classical names the variant);
  method auto         sketchKeras when the weights file exists, else the classical
                      extractor, announced in one log line.
Every extractor has `.method_used` ("sketchkeras" | "classical"), `.describe()`
(what made the sketches, for metrics and shard fingerprints) and
`extract(images: list[uint8 HxWx3 RGB]) -> list[uint8 HxW]` (same size as each input).

TensorFlow is imported only when the network is used, so the classical path and
everything importing this package stay light.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.config import Config, ConfigError, ExtractConfig, dask_address

log = logging.getLogger("s2p.sketch")


class Extractor(Protocol):
    method_used: str
    variant: str

    def describe(self) -> dict: ...

    def extract(self, images: list[np.ndarray]) -> list[np.ndarray]: ...


def weights_path(cfg: ExtractConfig) -> Path | None:
    """The configured sketchKeras weights if the file exists, else None."""
    if not cfg.weights:
        return None
    path = Path(cfg.weights)
    return path if path.is_file() else None


def resolve_method(cfg: ExtractConfig, logger: logging.Logger | None = None) -> str:
    """'sketchkeras' or 'classical', by the rules in the module docstring."""
    if cfg.method == "classical":
        return "classical"
    if weights_path(cfg) is not None:
        return "sketchkeras"
    if cfg.method == "sketchkeras":
        where = cfg.weights or "null"
        raise ConfigError(
            f"params.yaml: extract.weights: {where} not found; extract.method: sketchkeras needs "
            "the sketchKeras mod.h5 there (or set extract.method: auto | classical)"
        )
    (logger or log).warning(
        "extract: sketchKeras weights %s not found; using the classical extractor '%s' "
        "(method_used=classical in metrics)", cfg.weights, cfg.classical,
    )
    return "classical"


def check_params(cfg: Config) -> None:
    """What params.yaml asks of this machine, checked before any work (and before
    Prefect or TensorFlow is imported): sketchKeras weights when
    extract.method is sketchkeras, a Dask runner's address. Raises ConfigError."""
    if cfg.extract.method == "sketchkeras":
        resolve_method(cfg.extract)  # raises when the weights file is missing
    if cfg.extract.runner.kind == "dask_address":
        dask_address(cfg.extract.runner, "extract")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_extractor(cfg: ExtractConfig, logger: logging.Logger | None = None) -> Extractor:
    method = resolve_method(cfg, logger)
    if method == "classical":
        from pipeline.sketch.classical import ClassicalExtractor

        return ClassicalExtractor(cfg.classical, cfg.variant, cfg.work_size)

    from pipeline.sketch import sketchkeras as sk

    path = weights_path(cfg)
    try:
        model = sk.load_sketchkeras(path)
    except sk.WeightsMismatch as err:
        raise ConfigError(f"extract.weights: {err}") from None
    digest = file_sha256(path)
    (logger or log).info("extract: sketchKeras weights %s (sha256 %s...) loaded", path, digest[:12])
    return sk.SketchKerasExtractor(model, cfg.variant, cfg.batch_images, cfg.work_size,
                                   weights={"weights": str(path), "weights_sha256": digest})


@functools.lru_cache(maxsize=2)
def cached_extractor(cfg: ExtractConfig) -> Extractor:
    """One extractor per process and config: Dask workers build the network once,
    not once per shard."""
    return make_extractor(cfg)
