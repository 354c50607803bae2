"""Extract flow: colour shards -> aligned sketch shards, one Prefect task per shard.

Resumable: a sketch shard is kept when it is complete, has the colour shard's row
count and ids, and its fingerprint (extractor identity + colour shard) matches;
everything else is (re)computed. Tasks retry transient failures; a bad colour
row is recorded and replaced by a blank sketch (see pipeline/sketch/stage.py).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from flows.runner import run_flow, submit_windowed
from pipeline.jsonio import write_json
from pipeline.config import Config, ExtractConfig
from pipeline.shards import (
    is_complete_shard,
    make_fingerprint,
    prepare_shard_dir,
    read_ids,
    read_manifest,
    shard_paths,
    write_manifest,
)
from pipeline.sketch import cached_extractor, resolve_method
from pipeline.sketch.stage import extract_shard_file, shard_rejects

log = logging.getLogger("s2p.extract")
PROGRESS_EVERY_S = 30.0


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def extract_shard(colour_path: str, sketch_path: str, ecfg: ExtractConfig, row_group_rows: int,
                  fallback_size: int, fingerprint: str) -> dict:
    logger = get_run_logger()
    extractor = cached_extractor(ecfg)
    name = Path(colour_path).name
    last = [time.perf_counter()]
    started = last[0]

    def progress(done: int, total: int) -> None:
        # sketchKeras on CPU takes seconds per image: say something between shards.
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_EVERY_S and done < total:
            last[0] = now
            logger.info("%s: %d/%d images, %.2f images/s", name, done, total, done / (now - started))

    out = extract_shard_file(colour_path, sketch_path, extractor, ecfg.batch_images, row_group_rows,
                             fallback_size, fingerprint, progress)
    for bad in out.rejected:
        logger.warning("%s: row %s rejected (%s); a blank sketch keeps the alignment",
                       name, bad["id"], bad["reason"])
    logger.info("%s: %d images, %d rejected, %.2f images/s", name, out.rows, len(out.rejected),
                out.rows / out.seconds if out.seconds > 0 else 0.0)
    return {"name": out.name, "rows": out.rows, "seconds": out.seconds, "rejected": out.rejected}


def extract(cfg: Config) -> dict:
    """Run extract with the task runner from params; returns the metrics dict.

    `auto` is resolved here, once (one log line on fallback), and the extractor is
    built before the flow starts, so a missing or mismatched weights file fails in
    a second with one line; the flow and its tasks get the concrete method.
    """
    ecfg = cfg.extract.model_copy(update={"method": resolve_method(cfg.extract, log)})
    cached_extractor(ecfg)
    cfg = cfg.model_copy(update={"extract": ecfg})
    return run_flow(extract_flow, cfg, cfg.extract.runner, "extract")


@flow(name="extract")
def extract_flow(cfg: Config) -> dict:
    started = time.perf_counter()
    root = cfg.data_root
    colour_dir, sketch_dir = root / "shards" / "color", root / "shards" / "sketch"
    read_manifest(colour_dir)  # the colour set must be finished
    prepare_shard_dir(sketch_dir)

    # Already concrete when called through `extract`; resolved here for direct calls.
    ecfg = cfg.extract.model_copy(update={"method": resolve_method(cfg.extract, log)})
    identity = cached_extractor(ecfg).describe()
    log.info("extract: %s", json.dumps(identity, sort_keys=True))

    colour_paths = shard_paths(colour_dir)
    names = {p.name for p in colour_paths}
    # Shards the colour set no longer has would otherwise end up inside the
    # DVC-tracked output.
    for stale in shard_paths(sketch_dir):
        if stale.name not in names:
            stale.unlink()

    todo, skipped = [], 0
    for cpath in colour_paths:
        meta = pq.read_metadata(cpath)
        colour_print = (meta.metadata or {}).get(b"s2p.fingerprint", b"").decode()
        print_ = make_fingerprint(identity, colour_print, meta.num_rows, cfg.data.row_group_rows)
        spath = sketch_dir / cpath.name
        if (is_complete_shard(spath, meta.num_rows, fingerprint=print_)
                and read_ids(spath) == read_ids(cpath)):
            skipped += 1
        else:
            todo.append((cpath, spath, print_, meta.num_rows))
    if skipped:
        log.info("extract: resuming, %d of %d shard(s) already complete", skipped, len(colour_paths))

    def submit(item):
        cpath, spath, print_, _ = item
        return extract_shard.submit(str(cpath), str(spath), ecfg, cfg.data.row_group_rows,
                                    cfg.data.resolution, print_)

    fresh = sum(item[3] for item in todo)
    bar = tqdm(total=fresh, unit="img", desc="extract")
    work_started = time.perf_counter()
    for _, result in submit_windowed(submit, todo, cfg.extract.shards_in_flight):
        bar.update(result["rows"])
    bar.close()
    work_seconds = time.perf_counter() - work_started

    rejected = [r for path in shard_paths(sketch_dir) for r in shard_rejects(path)]
    manifest = write_manifest(sketch_dir, "sketch", {**identity, "rejects": len(rejected)})
    metrics = {
        **identity,
        "images": manifest["rows"],
        "rejects": len(rejected),
        "rejected_ids": [r["id"] for r in rejected],
        "shards": len(manifest["shards"]),
        "shards_skipped": skipped,
        "images_this_run": fresh,
        "images_per_s": round(fresh / work_seconds, 2) if fresh and work_seconds > 0 else 0.0,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(root / "metrics" / "extract.json", metrics)
    log.info("extract: %d sketches (%s) in %d shard(s), %d rejected, %.2f images/s",
             metrics["images"], metrics["method_used"], metrics["shards"], metrics["rejects"],
             metrics["images_per_s"])
    return metrics


