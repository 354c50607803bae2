"""Featurize flow: frozen VGG19 fc1 codes of every colour image, computed once.

colour shards -> `shards/style/` aligned row for row (same shard names, same
order, `id` repeated): `style` = V(y) and `style_aug` = V of
featurize.augmented_copies distorted copies (`pipeline/augment.py`), float16.
One Prefect task per shard; a shard is skipped when it is already complete
with the same fingerprint (colour shard + encoder + settings), so an
interrupted run resumes. Each row's augmentation RNG is seeded from
(featurize.seed, row id), so the output does not depend on sharding, batching
or the task runner. Memory: one batch of decoded images at a time plus one
shard of float16 codes.
"""
from __future__ import annotations

import hashlib
import logging
import time
import uuid
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from flows.runner import run_flow, submit_windowed
from pipeline.augment import distort_for_reference
from pipeline.config import Config, ConfigError, FeaturizeConfig
from pipeline.jsonio import write_json
from pipeline.shards import (
    is_complete_shard,
    make_fingerprint,
    shard_paths,
    write_manifest,
    write_shard,
)
from pipeline.style_encoder import STYLE_DIM, StyleEncoder, resolve_weights, style_table

log = logging.getLogger("s2p.featurize")

_ENCODERS: dict[tuple, StyleEncoder] = {}
# Progress bars of the flows running in this process, by run key. A task running
# in the same process (the in-process runner) advances the bar batch by batch; on
# Dask workers the key is unknown and the flow advances it when a shard is done.
_BARS: dict[str, tqdm] = {}


def encoder_for(fcfg: FeaturizeConfig) -> StyleEncoder:
    """One encoder per process (a Dask worker builds it once, not once per shard)."""
    key = (fcfg.weights, str(resolve_weights(fcfg.weights)), fcfg.input_size, fcfg.seed,
           fcfg.precision)
    if key not in _ENCODERS:
        _ENCODERS[key] = StyleEncoder(fcfg.weights, fcfg.input_size, fcfg.seed, fcfg.precision)
    return _ENCODERS[key]


def row_rng(seed: int, row_id: str) -> np.random.Generator:
    """The augmentation RNG of one row: a function of (seed, id) only."""
    words = hashlib.sha256(row_id.encode()).digest()[:16]
    return np.random.default_rng([seed, *np.frombuffer(words, dtype="<u4").tolist()])


def _decode(data: bytes | None) -> np.ndarray | None:
    if not data:
        return None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _encode(encoder: StyleEncoder, images: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Codes of images (any sizes), in order, `batch_size` at a time, float16."""
    out = np.zeros((len(images), STYLE_DIM), np.float16)
    by_shape: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    for idx in by_shape.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            codes = encoder.encode(np.stack([images[i] for i in chunk]))
            out[chunk] = codes.numpy().astype(np.float16)
    return out


# Tasks and flows reach _BARS only through these functions: Dask ships the task
# (and the flow, in its context) pickled by value, globals included, and a
# progress bar does not pickle. Module-level functions are pickled by name.
def live_progress(bar_key: str) -> Callable[[int], object] | None:
    bar = _BARS.get(bar_key)
    return bar.update if bar is not None else None


def open_bar(bar_key: str, total: int) -> tqdm:
    _BARS[bar_key] = bar = tqdm(total=total, unit="img", desc="featurize")
    return bar


def close_bar(bar_key: str) -> None:
    bar = _BARS.pop(bar_key, None)
    if bar is not None:
        bar.close()


def featurize_shard_file(color_path: Path, out_path: Path, fcfg: FeaturizeConfig,
                         row_group_rows: int, fingerprint: str, expected_source: str,
                         progress: Callable[[int], object] | None = None) -> dict:
    """Compute and write one style shard; returns counts and timings.
    `progress(n)` is called after each batch of n rows."""
    encoder = encoder_for(fcfg)
    if encoder.source != expected_source:
        raise RuntimeError(f"{color_path}: this worker found style_encoder={encoder.source}, "
                           f"the flow expected {expected_source} (weights differ between machines)")
    started = time.perf_counter()
    k = fcfg.augmented_copies
    ids: list[str] = []
    styles, augs, valid, bad = [], [], [], []
    for batch in pq.ParquetFile(color_path).iter_batches(batch_size=fcfg.batch_size,
                                                          columns=["id", "color"]):
        batch_ids = batch.column("id").to_pylist()
        decoded = [_decode(b) for b in batch.column("color").to_pylist()]
        ok = np.array([img is not None for img in decoded], dtype=bool)
        for row_id, good in zip(batch_ids, ok):
            if not good:
                log.warning("%s: row %s: colour image cannot be decoded; style left null",
                            color_path, row_id)
                bad.append(row_id)
        images = [img for img in decoded if img is not None]
        copies = []
        for row_id, img in zip(batch_ids, decoded):
            if img is not None:
                rng = row_rng(fcfg.seed, row_id)
                copies += [distort_for_reference(img, rng) for _ in range(k)]
        style = np.zeros((len(batch_ids), STYLE_DIM), np.float16)
        aug = np.zeros((len(batch_ids), k, STYLE_DIM), np.float16)
        if images:
            style[ok] = _encode(encoder, images, fcfg.batch_size)
            if k:
                aug[ok] = _encode(encoder, copies, fcfg.batch_size).reshape(-1, k, STYLE_DIM)
        ids += batch_ids
        styles.append(style)
        augs.append(aug)
        valid += ok.tolist()
        if progress is not None:
            progress(len(batch_ids))
    table = style_table(ids, np.concatenate(styles) if styles else np.zeros((0, STYLE_DIM)),
                        np.concatenate(augs) if augs else np.zeros((0, k, STYLE_DIM)),
                        np.asarray(valid, bool))
    write_shard(out_path, table, "style", row_group_rows, fingerprint)
    images_done = len(ids) - len(bad)
    return {"rows": len(ids), "bad_rows": bad, "forwards": images_done * (1 + k),
            "seconds": time.perf_counter() - started, "reported": len(ids) if progress else 0}


@task(retries=1, retry_delay_seconds=1, cache_policy=NO_CACHE)
def featurize_shard(color_path: str, out_path: str, fcfg: FeaturizeConfig, row_group_rows: int,
                    fingerprint: str, expected_source: str, threads: int | None,
                    bar_key: str) -> dict:
    if threads:
        torch.set_num_threads(threads)
    return featurize_shard_file(Path(color_path), Path(out_path), fcfg, row_group_rows,
                                fingerprint, expected_source, live_progress(bar_key))


def featurize(cfg: Config) -> dict:
    """Run featurize with the task runner from params; returns the metrics dict."""
    return run_flow(featurize_flow, cfg, cfg.featurize.runner, "featurize")


@flow(name="featurize", log_prints=True)
def featurize_flow(cfg: Config) -> dict:
    started = time.perf_counter()
    fcfg = cfg.featurize
    color_dir = cfg.data_root / "shards" / "color"
    style_dir = cfg.data_root / "shards" / "style"
    colour_shards = shard_paths(color_dir)
    if not colour_shards:
        raise ConfigError(f"{color_dir}: no colour shards; run the ingest stage first")
    style_dir.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in colour_shards}
    for path in shard_paths(style_dir):
        if path.name not in names:
            path.unlink()  # left over from a larger colour set
    for tmp in style_dir.glob(".*.tmp-*"):
        tmp.unlink()  # a killed run's partial write

    weights_path = resolve_weights(fcfg.weights)
    source = "random" if weights_path is None else "imagenet"
    settings = {"style_encoder": source, "weights": str(weights_path) if weights_path else None,
                "input_size": fcfg.input_size, "augmented_copies": fcfg.augmented_copies,
                "seed": fcfg.seed, "precision": fcfg.precision}
    todo, rows_total = [], 0
    for path in colour_shards:
        meta = pq.read_metadata(path)
        colour_print = (meta.metadata or {}).get(b"s2p.fingerprint", b"").decode()
        fingerprint = make_fingerprint("style", settings, path.name, meta.num_rows, colour_print)
        rows_total += meta.num_rows
        out = style_dir / path.name
        if not is_complete_shard(out, meta.num_rows, fingerprint):
            todo.append((path, out, fingerprint, meta.num_rows))
    log.info("featurize: %d shard(s), %d to compute, style_encoder=%s, input %d, K=%d",
             len(colour_shards), len(todo), source, fcfg.input_size, fcfg.augmented_copies)

    threads = fcfg.runner.threads_per_worker if fcfg.runner.kind != "inprocess" else None
    window = 2 if fcfg.runner.kind == "inprocess" else 2 * fcfg.runner.workers
    bar_key = uuid.uuid4().hex
    submit = lambda item: featurize_shard.submit(  # noqa: E731
        str(item[0]), str(item[1]), fcfg, cfg.data.row_group_rows, item[2], source, threads,
        bar_key)
    computed, forwards, bad = 0, 0, []
    work_started = time.perf_counter()
    bar = open_bar(bar_key, sum(item[3] for item in todo))
    try:
        for item, result in submit_windowed(submit, todo, window):
            computed += result["rows"]
            forwards += result["forwards"]
            bad += result["bad_rows"]
            bar.update(result["rows"] - result["reported"])
            log.info("featurize: %s: %d rows in %.1f s (%.1f images/s)", item[1].name,
                     result["rows"], result["seconds"],
                     result["rows"] / max(result["seconds"], 1e-9))
    finally:
        close_bar(bar_key)
    work_seconds = time.perf_counter() - work_started

    manifest = write_manifest(style_dir, "style", settings)
    if manifest["rows"] != rows_total:
        raise RuntimeError(f"{style_dir}: {manifest['rows']} rows, colour set has {rows_total}")
    rate = round(computed / work_seconds, 2) if computed and work_seconds > 0 else 0.0
    metrics = {
        **settings,
        "images": manifest["rows"],
        "images_computed": computed,
        "images_per_s": rate,
        "vgg_forwards_per_s": round(forwards / work_seconds, 2) if forwards else 0.0,
        "bad_rows": len(bad),
        "shards": len(manifest["shards"]),
        "shards_computed": len(todo),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(cfg.data_root / "metrics" / "featurize.json", metrics)
    log.info("featurize: %d images (%d computed, %.2f images/s), style_encoder=%s",
             metrics["images"], computed, rate, source)
    return metrics
