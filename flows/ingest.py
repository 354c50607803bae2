"""Ingest flow: plan chunks, decode them as tasks, de-duplicate and write in order."""
from __future__ import annotations

import logging
import shutil
import time
from collections import Counter

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.runner import in_flight, limit_threads, map_shards, run_flow, worker_threads
from pipeline import ingest as ing
from pipeline.config import Config
from pipeline.jsonio import write_json
from pipeline.logs import rate_text, throughput
from pipeline.shards import iter_rows, plan_shards, write_manifest

log = logging.getLogger("s2p.ingest")


@task(retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def decode_chunk(items: tuple[ing.Input, ...], cfg: Config, part: str) -> ing.ChunkResult:
    limit_threads(worker_threads(cfg.ingest.runner))
    return ing.process_chunk(list(items), cfg.data, cfg.ingest, part)


def ingest(cfg: Config) -> dict:
    """Run ingest with the task runner from params; returns the metrics dict.
    A missing or unreadable ingest.folder is one line (exit 2) before any work."""
    ing.check_params(cfg)
    return run_flow(ingest_flow, cfg, cfg.ingest.runner, "ingest")


@flow(name="ingest", log_prints=True)
def ingest_flow(cfg: Config) -> dict:
    started = time.perf_counter()
    layout = cfg.layout
    jobs, planned_rejects = ing.plan_jobs(cfg)
    log.info("ingest: %d inputs in %d chunk(s) from %s", sum(job.work for job in jobs), len(jobs),
             cfg.ingest.source if cfg.ingest.source == "toon" else cfg.ingest.folder)
    # De-duplication depends on every earlier shard: the first one to remake
    # invalidates the rest (chained), and the kept ones' hashes are re-read.
    plan = plan_shards(layout.shards("color"), jobs, chained=True)
    seen: dict[str, str] = {}
    for job in plan.done:
        seen.update(ing.seen_hashes(job.path))

    fresh_rows = 0
    work_started = time.perf_counter()
    submit = lambda job, _bar: decode_chunk.submit(  # noqa: E731
        job.inputs, cfg, str(ing.part_path(job)))
    window = in_flight(cfg.ingest.runner, cfg.ingest.chunks_in_flight)
    for job, result in map_shards(plan, submit, window, "ingest"):
        ing.write_colour_shard(job, result, seen, cfg.data.row_group_rows)
        fresh_rows += job.work
    work_seconds = time.perf_counter() - work_started

    shutil.rmtree(plan.folder / ing.PARTS, ignore_errors=True)  # a crashed run's leftovers
    rejects = ing.write_rejects(plan.folder, layout.rejects, planned_rejects)
    manifest = write_manifest(plan.folder, "color", {"source": cfg.ingest.source})
    metrics = _metrics(cfg, manifest, rejects, fresh_rows, work_seconds, started)
    write_json(layout.metrics("ingest"), metrics)
    log.info(
        "ingest: %d images in %d shard(s), %d rejected, %s",
        metrics["images"], metrics["shards"], metrics["rejected"],
        rate_text(metrics["timing"]["images_per_s"]),
    )
    return metrics


def _metrics(cfg, manifest, rejects, fresh, work_seconds, started) -> dict:
    splits = Counter(row["split"] for row in iter_rows([cfg.layout.shards("color")],
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
            "images_per_s": throughput(fresh, work_seconds),
            "seconds": round(time.perf_counter() - started, 2),
        },
    }
