"""Featurize flow: frozen VGG19 style codes of every colour image, computed once.

colour shards -> `shards/style/` aligned row for row (same shard names, same
order, `id` repeated); the work of one shard is `pipeline.featurize`. One
Prefect task per shard; a shard is skipped when it is already complete with the
same fingerprint (colour shard + encoder + settings), so an interrupted run
resumes.
"""
from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq
import torch
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from flows.runner import run_flow, submit_windowed
from pipeline import featurize as lib
from pipeline.config import Config, ConfigError, FeaturizeConfig
from pipeline.jsonio import write_json
from pipeline.shards import is_complete_shard, make_fingerprint, shard_paths, write_manifest
from pipeline.style_encoder import resolve_weights

log = logging.getLogger("s2p.featurize")

# Progress bars of the flows running in this process, by run key. A task running
# in the same process (the in-process runner) advances the bar batch by batch; on
# Dask workers the key is unknown and the flow advances it when a shard is done.
_BARS: dict[str, tqdm] = {}


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


@task(retries=1, retry_delay_seconds=1, cache_policy=NO_CACHE)
def featurize_shard(color_path: str, out_path: str, fcfg: FeaturizeConfig, row_group_rows: int,
                    fingerprint: str, expected_source: str, threads: int | None,
                    bar_key: str) -> dict:
    if threads:
        torch.set_num_threads(threads)
    return lib.featurize_shard(Path(color_path), Path(out_path), fcfg, row_group_rows,
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
    source = lib.encoder_source(fcfg)
    settings = {"style_encoder": source, "code": fcfg.code, "code_dim": lib.code_dim(fcfg),
                "weights": str(weights_path) if weights_path and source != "oracle" else None,
                "input_size": fcfg.input_size, "augmented_copies": fcfg.augmented_copies,
                "distortion": fcfg.distortion, "seed": fcfg.seed, "precision": fcfg.precision}
    todo, rows_total = [], 0
    for path in colour_shards:
        meta = pq.read_metadata(path)
        colour_print = (meta.metadata or {}).get(b"s2p.fingerprint", b"").decode()
        fingerprint = make_fingerprint("style", settings, path.name, meta.num_rows, colour_print)
        rows_total += meta.num_rows
        out = style_dir / path.name
        if not is_complete_shard(out, meta.num_rows, fingerprint):
            todo.append((path, out, fingerprint, meta.num_rows))
    log.info("featurize: %d shard(s), %d to compute, code=%s (%d-d), style_encoder=%s, "
             "input %d, K=%d", len(colour_shards), len(todo), fcfg.code, lib.code_dim(fcfg),
             source, fcfg.input_size, fcfg.augmented_copies)

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
