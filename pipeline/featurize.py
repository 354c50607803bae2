"""Style codes of one colour shard: the work of the `featurize` stage.

For every colour row: `style` = V(y) and `style_aug` = V of
`featurize.augmented_copies` distorted copies (`pipeline/augment.py`), float16,
aligned row for row with the colour shard (same ids, same order). Each row's
augmentation RNG is seeded from (featurize.seed, row id), so the output does
not depend on sharding, batching or the task runner. Memory: one batch of
decoded images at a time plus one shard of float16 codes.

`featurize.code: oracle_palette` reads the toon palette column instead of the
pixels (`pipeline/oracle.py`); its "augmented" codes are copies of the code,
since a palette has no layout to distort.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from pipeline.augment import distort_for_reference
from pipeline.config import STYLE_CODE_DIMS, Config, ConfigError, FeaturizeConfig, dask_address
from pipeline.images import decode_stored
from pipeline.shards import shard_paths, style_table, write_shard

log = logging.getLogger("s2p.featurize")

_ENCODERS: dict[tuple, object] = {}


def code_dim(fcfg: FeaturizeConfig) -> int:
    return STYLE_CODE_DIMS[fcfg.code]


def encoder_for(fcfg: FeaturizeConfig):
    """One StyleEncoder per process and settings (a Dask worker builds it once,
    not once per shard; VGG19 takes seconds to build)."""
    from pipeline.style_encoder import StyleEncoder, resolve_weights

    key = (fcfg.weights, str(resolve_weights(fcfg.weights)), fcfg.input_size, fcfg.seed,
           fcfg.precision, fcfg.code)
    if key not in _ENCODERS:
        _ENCODERS[key] = StyleEncoder(fcfg.weights, fcfg.input_size, fcfg.seed, fcfg.precision,
                                      fcfg.code)
    return _ENCODERS[key]


def encoder_source(fcfg: FeaturizeConfig) -> str:
    """What made the codes, without building anything: imagenet | random | oracle."""
    from pipeline.style_encoder import resolve_weights

    if fcfg.code == "oracle_palette":
        return "oracle"
    return "random" if resolve_weights(fcfg.weights) is None else "imagenet"


def check_params(cfg: Config) -> None:
    """Checked before any work (and before Prefect or torch is imported): the
    colour shards exist, a Dask runner has an address. Raises ConfigError."""
    colour_dir = cfg.layout.shards("color")
    if not shard_paths(colour_dir):
        raise ConfigError(f"{colour_dir}: no colour shards; run the ingest stage first")
    if cfg.featurize.runner.kind == "dask_address":
        dask_address(cfg.featurize.runner, "featurize")


def settings(fcfg: FeaturizeConfig) -> dict:
    """What the codes depend on: recorded in the manifest and the metrics, and
    part of every style shard's fingerprint."""
    from pipeline.style_encoder import resolve_weights

    weights_path = resolve_weights(fcfg.weights)
    source = encoder_source(fcfg)
    return {"style_encoder": source, "code": fcfg.code, "code_dim": code_dim(fcfg),
            "weights": str(weights_path) if weights_path and source != "oracle" else None,
            "input_size": fcfg.input_size, "augmented_copies": fcfg.augmented_copies,
            "distortion": fcfg.distortion, "seed": fcfg.seed, "precision": fcfg.precision}


def row_rng(seed: int, row_id: str) -> np.random.Generator:
    """The augmentation RNG of one row: a function of (seed, id) only."""
    words = hashlib.sha256(row_id.encode()).digest()[:16]
    return np.random.default_rng([seed, *np.frombuffer(words, dtype="<u4").tolist()])


def encode_images(encoder, images: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Codes of images (any sizes), in order, `batch_size` at a time, float16."""
    out = np.zeros((len(images), encoder.dim), np.float16)
    by_shape: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    for idx in by_shape.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            codes = encoder.encode(np.stack([images[i] for i in chunk]))
            out[chunk] = codes.numpy().astype(np.float16)
    return out


def _decode_or_none(data: bytes | None) -> np.ndarray | None:
    try:
        return decode_stored(data or b"")
    except ValueError:
        return None


def _vgg_batch(encoder, fcfg: FeaturizeConfig, ids: list[str], colours: list[bytes | None],
               where: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    decoded = [_decode_or_none(b) for b in colours]
    ok = np.array([img is not None for img in decoded], dtype=bool)
    for row_id, good in zip(ids, ok):
        if not good:
            log.warning("%s: row %s: colour image cannot be decoded; style left null",
                        where, row_id)
    k = fcfg.augmented_copies
    style = np.zeros((len(ids), encoder.dim), np.float16)
    aug = np.zeros((len(ids), k, encoder.dim), np.float16)
    images = [img for img in decoded if img is not None]
    if images:
        style[ok] = encode_images(encoder, images, fcfg.batch_size)
        if k:
            copies = []
            for row_id, img in zip(ids, decoded):
                if img is not None:
                    rng = row_rng(fcfg.seed, row_id)
                    copies += [distort_for_reference(img, rng, fcfg.distortion) for _ in range(k)]
            aug[ok] = encode_images(encoder, copies, fcfg.batch_size).reshape(-1, k, encoder.dim)
    return style, aug, ok


def _oracle_batch(fcfg: FeaturizeConfig, palettes: list[str | None],
                  where: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from pipeline.oracle import palette_codes

    style = palette_codes(palettes, str(where)).astype(np.float16)
    aug = np.repeat(style[:, None], fcfg.augmented_copies, axis=1)
    return style, aug, np.ones(len(palettes), bool)


def featurize_shard(colour_path: Path, out_path: Path, fcfg: FeaturizeConfig,
                    row_group_rows: int, fingerprint: str, expected_source: str,
                    progress: Callable[[int], object] | None = None) -> dict:
    """Compute and write one style shard; returns counts and timings.
    `progress(n)` is called after each batch of n rows."""
    oracle = fcfg.code == "oracle_palette"
    encoder = None if oracle else encoder_for(fcfg)
    source = "oracle" if oracle else encoder.source
    if source != expected_source:
        raise RuntimeError(f"{colour_path}: this worker found style_encoder={source}, "
                           f"the flow expected {expected_source} (weights differ between machines)")
    started = time.perf_counter()
    column = "palette" if oracle else "color"
    ids: list[str] = []
    styles, augs, valid = [], [], []
    for batch in pq.ParquetFile(colour_path).iter_batches(batch_size=fcfg.batch_size,
                                                          columns=["id", column]):
        batch_ids = batch.column("id").to_pylist()
        values = batch.column(column).to_pylist()
        style, aug, ok = (_oracle_batch(fcfg, values, colour_path) if oracle
                          else _vgg_batch(encoder, fcfg, batch_ids, values, colour_path))
        ids += batch_ids
        styles.append(style)
        augs.append(aug)
        valid.append(ok)
        if progress is not None:
            progress(len(batch_ids))
    dim, k = code_dim(fcfg), fcfg.augmented_copies
    table = style_table(ids, np.concatenate(styles) if styles else np.zeros((0, dim)),
                        np.concatenate(augs) if augs else np.zeros((0, k, dim)),
                        np.concatenate(valid) if valid else np.zeros(0, bool))
    write_shard(out_path, table, "style", row_group_rows, fingerprint)
    valid_all = np.concatenate(valid) if valid else np.zeros(0, bool)
    bad = [row_id for row_id, good in zip(ids, valid_all) if not good]
    images_done = len(ids) - len(bad)
    return {"rows": len(ids), "bad_rows": bad, "forwards": 0 if oracle else images_done * (1 + k),
            "seconds": time.perf_counter() - started}
