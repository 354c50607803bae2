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
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.runner import (in_flight, limit_threads, map_shards, run_flow, task_progress,
                          worker_threads)
from pipeline import featurize as lib
from pipeline.config import Config, FeaturizeConfig
from pipeline.jsonio import write_json
from pipeline.logs import rate_text, throughput
from pipeline.shards import aligned_jobs, make_fingerprint, plan_shards, write_manifest

log = logging.getLogger("s2p.featurize")


@task(retries=1, retry_delay_seconds=1, cache_policy=NO_CACHE)
def featurize_shard(colour_path: str, out_path: str, fcfg: FeaturizeConfig, row_group_rows: int,
                    fingerprint: str, expected_source: str, threads: int | None,
                    bar_key: str) -> dict:
    limit_threads(threads)
    return lib.featurize_shard(Path(colour_path), Path(out_path), fcfg, row_group_rows,
                               fingerprint, expected_source,
                               task_progress(bar_key, Path(out_path).name))


def featurize(cfg: Config) -> dict:
    """Run featurize with the task runner from params; returns the metrics dict."""
    lib.check_params(cfg)
    return run_flow(featurize_flow, cfg, cfg.featurize.runner, "featurize")


@flow(name="featurize", log_prints=True)
def featurize_flow(cfg: Config) -> dict:
    started = time.perf_counter()
    fcfg = cfg.featurize
    lib.check_params(cfg)
    settings = lib.settings(fcfg)
    jobs = aligned_jobs(cfg.layout.shards("color"), cfg.layout.shards("style"),
                        lambda name, rows, made_from: make_fingerprint(
                            "style", settings, name, rows, made_from))
    plan = plan_shards(cfg.layout.shards("style"), jobs)
    log.info("featurize: %d shard(s), %d to compute, code=%s (%d-d), style_encoder=%s, "
             "input %d, K=%d", len(jobs), len(plan.todo), fcfg.code, settings["code_dim"],
             settings["style_encoder"], fcfg.input_size, fcfg.augmented_copies)

    threads = worker_threads(fcfg.runner)
    window = in_flight(fcfg.runner, 2)
    submit = lambda job, bar_key: featurize_shard.submit(  # noqa: E731
        str(job.source), str(job.path), fcfg, cfg.data.row_group_rows, job.fingerprint,
        settings["style_encoder"], threads, bar_key)
    computed, forwards, bad, task_seconds = 0, 0, [], 0.0
    work_started = time.perf_counter()
    for job, result in map_shards(plan, submit, window, "featurize"):
        computed += result["rows"]
        forwards += result["forwards"]
        bad += result["bad_rows"]
        task_seconds += result["seconds"]
        log.info("featurize: %s: %d rows in %.1f s (%.1f images/s)", job.name, result["rows"],
                 result["seconds"], result["rows"] / max(result["seconds"], 1e-9))
    work_seconds = time.perf_counter() - work_started

    manifest = write_manifest(plan.folder, "style", settings)
    rows_total = sum(job.rows for job in jobs)
    if manifest["rows"] != rows_total:
        raise RuntimeError(f"{plan.folder}: {manifest['rows']} rows, colour set has {rows_total}")
    rate = throughput(computed, work_seconds)
    metrics = {
        **settings,
        "images": manifest["rows"],
        "images_computed": computed,
        "images_per_s": rate,
        "task_seconds": round(task_seconds, 2),
        "vgg_forwards_per_s": round(forwards / work_seconds, 2) if forwards else 0.0,
        "bad_rows": len(bad),
        "shards": len(manifest["shards"]),
        "shards_computed": len(plan.todo),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(cfg.layout.metrics("featurize"), metrics)
    log.info("featurize: %d images (%d computed, %s), style_encoder=%s",
             metrics["images"], computed, rate_text(rate), settings["style_encoder"])
    return metrics
