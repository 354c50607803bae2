"""Extract flow: colour shards -> aligned sketch shards, one Prefect task per shard.

Resumable: a sketch shard is kept when it is complete, has the colour shard's row
count and ids, and its fingerprint (extractor identity + colour shard) matches;
everything else is (re)computed. Tasks retry transient failures; a bad colour
row is recorded and replaced by a blank sketch (see pipeline/sketch/shard.py).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.runner import in_flight, limit_threads, map_shards, run_flow, worker_threads
from pipeline.config import Config, ExtractConfig
from pipeline.jsonio import write_json
from pipeline.logs import rate_text, throughput
from pipeline.shards import aligned_jobs, make_fingerprint, plan_shards, read_manifest, write_manifest
from pipeline.sketch import cached_extractor, check_params, resolve_method
from pipeline.sketch.shard import all_rejects, extract_shard_file

log = logging.getLogger("s2p.extract")
PROGRESS_EVERY_S = 30.0


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def extract_shard(colour_path: str, sketch_path: str, ecfg: ExtractConfig, row_group_rows: int,
                  fallback_size: int, fingerprint: str, threads: int | None) -> dict:
    limit_threads(threads)
    logger = get_run_logger()
    name = Path(colour_path).name
    last = [time.perf_counter()]
    started = last[0]

    def progress(done: int, total: int) -> None:
        # sketchKeras on CPU takes seconds per image: say something between shards.
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_EVERY_S and done < total:
            last[0] = now
            logger.info("%s: %d/%d images, %.2f images/s", name, done, total, done / (now - started))

    out = extract_shard_file(colour_path, sketch_path, cached_extractor(ecfg), ecfg.batch_images,
                             row_group_rows, fallback_size, fingerprint, progress)
    for bad in out.rejected:
        logger.warning("%s: row %s rejected (%s); a blank sketch keeps the alignment",
                       name, bad["id"], bad["reason"])
    logger.info("%s: %d images, %d rejected, %.2f images/s", name, out.rows, len(out.rejected),
                out.rows / out.seconds if out.seconds > 0 else 0.0)
    return {"rows": out.rows, "seconds": out.seconds}


def extract(cfg: Config) -> dict:
    """Run extract with the task runner from params; returns the metrics dict.

    `auto` is resolved here, once (one log line on fallback), and the extractor is
    built before the flow starts, so a missing or mismatched weights file fails in
    a second with one line; the flow and its tasks get the concrete method.
    """
    check_params(cfg)
    ecfg = cfg.extract.model_copy(update={"method": resolve_method(cfg.extract, log)})
    cached_extractor(ecfg)
    cfg = cfg.model_copy(update={"extract": ecfg})
    return run_flow(extract_flow, cfg, cfg.extract.runner, "extract")


@flow(name="extract")
def extract_flow(cfg: Config) -> dict:
    started = time.perf_counter()
    colour_dir = cfg.layout.shards("color")
    read_manifest(colour_dir)  # the colour set must be finished
    # Already concrete when called through `extract`; resolved here for direct calls.
    ecfg = cfg.extract.model_copy(update={"method": resolve_method(cfg.extract, log)})
    identity = cached_extractor(ecfg).describe()
    log.info("extract: %s", json.dumps(identity, sort_keys=True))

    rgr = cfg.data.row_group_rows
    jobs = aligned_jobs(colour_dir, cfg.layout.shards("sketch"),
                        lambda _name, rows, made_from: make_fingerprint(identity, made_from, rows, rgr))
    plan = plan_shards(cfg.layout.shards("sketch"), jobs)
    submit = lambda job, _bar: extract_shard.submit(  # noqa: E731
        str(job.source), str(job.path), ecfg, rgr, cfg.data.resolution, job.fingerprint,
        worker_threads(ecfg.runner))
    fresh = sum(job.work for job in plan.todo)
    work_started = time.perf_counter()
    task_seconds = 0.0
    for _job, result in map_shards(plan, submit, in_flight(ecfg.runner, ecfg.shards_in_flight),
                                   "extract"):
        task_seconds += result["seconds"]
    work_seconds = time.perf_counter() - work_started

    rejected = all_rejects(plan.folder)
    manifest = write_manifest(plan.folder, "sketch", {**identity, "rejects": len(rejected)})
    metrics = {
        **identity,
        "images": manifest["rows"],
        "rejects": len(rejected),
        "rejected_ids": [r["id"] for r in rejected],
        "shards": len(manifest["shards"]),
        "shards_skipped": len(plan.done),
        "images_this_run": fresh,
        "images_per_s": throughput(fresh, work_seconds),
        "task_seconds": round(task_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(cfg.layout.metrics("extract"), metrics)
    log.info("extract: %d sketches (%s) in %d shard(s), %d rejected, %s",
             metrics["images"], metrics["method_used"], metrics["shards"], metrics["rejects"],
             rate_text(metrics["images_per_s"]))
    return metrics
