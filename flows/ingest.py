"""Ingest flow: plan chunks, decode them as tasks, de-duplicate and write in order."""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from flows.runner import run_flow, submit_windowed
from pipeline import ingest as ing
from pipeline.config import Config, ConfigError
from pipeline.jsonio import write_json
from pipeline.shards import (
    is_complete_shard,
    make_fingerprint,
    prepare_shard_dir,
    shard_name,
    shard_paths,
    write_manifest,
)

log = logging.getLogger("s2p.ingest")


@task(retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def decode_chunk(items: list[ing.Input], cfg: Config) -> ing.ChunkResult:
    return ing.process_chunk(items, cfg.data, cfg.ingest)


def ingest(cfg: Config) -> dict:
    """Run ingest with the task runner from params; returns the metrics dict.
    A missing or unreadable ingest.folder is one line (exit 2) before any work."""
    folder = cfg.ingest.folder
    if cfg.ingest.source == "folder":
        if not Path(folder).is_dir():
            raise ConfigError(f"params.yaml: ingest.folder: {folder}: no such folder")
        if not os.access(folder, os.R_OK | os.X_OK):
            raise ConfigError(f"params.yaml: ingest.folder: {folder}: not readable")
    return run_flow(ingest_flow, cfg, cfg.ingest.runner, "ingest")


@flow(name="ingest", log_prints=True)
def ingest_flow(cfg: Config) -> dict:
    started = time.perf_counter()
    root = cfg.data_root
    shard_dir = prepare_shard_dir(root / "shards" / "color")

    if cfg.ingest.source == "toon":
        chunks, planned_rejects = ing.plan_toon(cfg.ingest, cfg.data.shard_rows), []
    else:
        chunks, planned_rejects = ing.plan_folder(cfg.ingest.folder, cfg.data.shard_rows)
    log.info("ingest: %d inputs in %d chunk(s) from %s", sum(map(len, chunks)), len(chunks),
             cfg.ingest.source if cfg.ingest.source == "toon" else cfg.ingest.folder)

    # Shards from other params or beyond the current plan are stale.
    for path in shard_paths(shard_dir)[len(chunks):]:
        path.unlink()
    prints = [make_fingerprint(cfg.data, cfg.ingest, items) for items in chunks]
    # A shard is reusable only when every earlier one is too: de-duplication
    # depends on all earlier shards, so the first stale shard invalidates the rest.
    done = 0
    while done < len(chunks) and is_complete_shard(shard_dir / shard_name(done), fingerprint=prints[done]):
        done += 1
    seen: dict[str, str] = {}
    for index in range(done):
        seen.update(ing.seen_hashes(shard_dir / shard_name(index)))
    if done:
        log.info("ingest: resuming, %d of %d shard(s) already complete", done, len(chunks))

    todo = range(done, len(chunks))
    bar = tqdm(total=sum(len(chunks[i]) for i in todo), unit="img", desc="ingest")
    fresh_rows = 0
    work_started = time.perf_counter()
    submit = lambda i: decode_chunk.submit(chunks[i], cfg)  # noqa: E731
    for index, result in submit_windowed(submit, todo, cfg.ingest.chunks_in_flight):
        kept = ing.dedupe(result, seen)
        ing.write_color_shard(shard_dir, index, kept, cfg.data.row_group_rows, prints[index])
        fresh_rows += len(chunks[index])
        bar.update(len(chunks[index]))
    bar.close()
    work_seconds = time.perf_counter() - work_started

    rejects = ing.write_rejects(shard_dir, root / "rejects.parquet", planned_rejects)
    manifest = write_manifest(shard_dir, "color", {"source": cfg.ingest.source})
    metrics = _metrics(cfg, manifest, rejects, fresh_rows, work_seconds, started)
    write_json(root / "metrics" / "ingest.json", metrics)
    log.info(
        "ingest: %d images in %d shard(s), %d rejected, %.1f images/s",
        metrics["images"], metrics["shards"], metrics["rejected"], metrics["timing"]["images_per_s"],
    )
    return metrics


def _metrics(cfg, manifest, rejects, fresh, work_seconds, started) -> dict:
    from pipeline.shards import iter_rows

    splits = Counter(row["split"] for row in iter_rows([cfg.data_root / "shards" / "color"],
                                                        columns=[["split"]]))
    reasons = Counter(r["reason"].split(" (")[0].split(" of ")[0] for r in rejects)
    return {
        "source": cfg.ingest.source,
        "images": manifest["rows"],
        "rejected": len(rejects),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "shards": len(manifest["shards"]),
        "shard_bytes": manifest["bytes"],
        "splits": {k: splits.get(k, 0) for k in ("train", "val", "test")},
        "inputs_processed_this_run": fresh,
        "timing": {
            "images_per_s": round(fresh / work_seconds, 2) if fresh and work_seconds > 0 else 0.0,
            "seconds": round(time.perf_counter() - started, 2),
        },
    }

