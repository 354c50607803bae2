"""Evaluate flow: toon benchmark + baselines + swap test, reconstruction on the
held-out split, real-image grid; writes the headline data/summary.json (with
train's final losses and images/s), the full record data/metrics/evaluate.json,
data/evaluate/per_part.csv, swap_per_part.csv, grid.png and real_grid.png (see
pipeline/evaluate)."""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.colorize import Colorizer, ColorizeError, write_image
from pipeline.config import Config, ConfigError
from pipeline.evaluate import benchmark as bench
from pipeline.evaluate import check_params
from pipeline.evaluate.grid import tile
from pipeline.evaluate.real import colorize_real, placeholder_grid, skip_reason
from pipeline.evaluate.labelled import evaluate_labelled
from pipeline.evaluate.reconstruction import evaluate_reconstruction
from pipeline.evaluate.summary import headline
from pipeline.evaluate.v1_compare import v1_compare_or_reason
from pipeline.jsonio import read_json, write_json

log = logging.getLogger("s2p.evaluate")

CSV_COLUMNS = ("part", "method", "mean_delta_e", "hit_rate", "label")
SWAP_COLUMNS = ("part", "projection", "count")
V1_CELL = 96  # the V1 outputs are 256 px; ours are painted at the trained resolution


def evaluate(cfg: Config) -> dict:
    """Stage entry: a missing/incompatible checkpoint is one line and exit 2."""
    check_params(cfg)
    try:
        return evaluate_flow(cfg)
    except ColorizeError as err:
        raise ConfigError(f"evaluate: {err}") from None


@task(cache_policy=NO_CACHE)
def benchmark_task(cfg: Config, colorizer: Colorizer, extractor) -> tuple[dict, list, list]:
    ev = cfg.evaluate
    pairs = bench.make_pairs(ev.pairs, ev.seed, cfg.data.resolution, extractor, ev.batch_size)
    outputs, outputs2 = bench.paint_pairs(colorizer, pairs, ev.batch_size)
    return bench.score(pairs, outputs, outputs2, ev.hit_threshold), pairs, outputs


@task(cache_policy=NO_CACHE)
def reconstruction_task(cfg: Config, colorizer: Colorizer) -> dict:
    ev = cfg.evaluate
    return evaluate_reconstruction(colorizer, cfg.data_root, "test", ev.batch_size,
                                   ev.reconstruction_max_images)


@task(cache_policy=NO_CACHE)
def real_images_task(cfg: Config, colorizer: Colorizer, out_png: Path) -> dict | str:
    ev = cfg.evaluate
    reason = skip_reason(ev.real_sketch_dir, ev.real_reference_dir)
    if reason is None and colorizer.code == "oracle_palette":
        reason = "an oracle_palette model reads toon palettes, not pictures"
    result = None
    if reason is None:
        result = colorize_real(colorizer, ev.real_sketch_dir, ev.real_reference_dir, out_png,
                               cfg.data.resolution)
        if not result["images"]:
            reason = f"all {result['failed']} real sketch(es) failed to load"
    if reason is not None:
        log.info("evaluate: real images skipped: %s", reason)
        # DVC declares the file as a plot: write a placeholder that says so.
        write_image(out_png, placeholder_grid(reason, cfg.data.resolution))
        return f"skipped ({reason})"
    return result


@task(cache_policy=NO_CACHE)
def labelled_task(cfg: Config, colorizer: Colorizer, out_dir: Path) -> dict | str:
    ev, cell = cfg.evaluate, cfg.data.resolution
    grids = (out_dir / "labelled_grid.png", out_dir / "labelled_pairs.png")
    reason = None
    if not ev.labels:
        reason = "evaluate.labels is null"
    elif colorizer.code == "oracle_palette":
        reason = "an oracle_palette model reads toon palettes, not pictures"
    if reason is not None:
        log.info("evaluate: labelled benchmark skipped: %s", reason)
        for grid in grids:
            write_image(grid, placeholder_grid(reason, cell))
        return f"skipped ({reason})"
    metrics, many, pairs = evaluate_labelled(colorizer, cfg.layout, ev.labels, ev.labelled_pairs,
                                             ev.seed, ev.batch_size)
    write_image(grids[0], tile(many, cell))
    write_image(grids[1], tile(pairs, cell))
    return metrics


@task(cache_policy=NO_CACHE)
def v1_compare_task(cfg: Config, colorizer: Colorizer, out_png: Path) -> dict | str:
    picture, counts = v1_compare_or_reason(colorizer, cfg.evaluate.v1_outputs_dir,
                                           V1_CELL)
    if picture is None:
        log.info("evaluate: V1 comparison skipped: %s", counts)
        write_image(out_png, placeholder_grid(counts, cfg.data.resolution))
        return f"skipped ({counts})"
    write_image(out_png, picture)
    return counts


@flow(name="evaluate", log_prints=True)
def evaluate_flow(cfg: Config) -> dict:
    from pipeline import toon
    from pipeline.sketch import make_extractor

    started = time.perf_counter()
    layout, ev = cfg.layout, cfg.evaluate
    out_dir = layout.evaluate
    out_dir.mkdir(parents=True, exist_ok=True)

    colorizer = Colorizer.from_checkpoint(layout.generator, ev.device, featurize=cfg.featurize)
    extractor = make_extractor(cfg.extract)
    extract_metrics = read_json(layout.metrics("extract"), default={})
    trained_extractor = extract_metrics.get("method_used")
    if trained_extractor and trained_extractor != extractor.method_used:
        log.warning("evaluate: training sketches came from %s, benchmark sketches from %s",
                    trained_extractor, extractor.method_used)

    result, pairs, outputs = benchmark_task(cfg, colorizer, extractor)
    names = toon.PARTS
    rows = [[p.sketch, p.reference, out, p.target] for p, out in zip(pairs, outputs)][: ev.grid_rows]
    write_image(out_dir / "grid.png", tile(rows, cfg.data.resolution))
    _write_csv(out_dir / "per_part.csv", bench.per_part_rows(result, names), CSV_COLUMNS)

    reconstruction = reconstruction_task(cfg, colorizer)
    real = real_images_task(cfg, colorizer, out_dir / "real_grid.png")
    v1 = v1_compare_task(cfg, colorizer, out_dir / "v1_compare.png")
    labelled = labelled_task(cfg, colorizer, out_dir)

    swap = dict(result["swap"])
    swap["per_part"] = {names[p]: v for p, v in swap["per_part"].items()}
    metrics = {
        "benchmark": result["benchmark"],
        "per_part": {names[p]: v for p, v in result["per_part"].items()},
        "swap": swap,
        "reconstruction": reconstruction,
        "real_images": real,
        "v1_compare": v1,
        "labelled": labelled,
        "pairs": len(pairs),
        "scored_parts": result["scored_parts"],
        "hit_threshold": ev.hit_threshold,
        "seed": ev.seed,
        "resolution": cfg.data.resolution,
        "extractor": trained_extractor or "unknown (no extract metrics)",
        "benchmark_extractor": extractor.describe(),
        "style_code": cfg.featurize.code,
        "style_precision": cfg.featurize.precision,
        **_encoder_provenance(colorizer.encoder, cfg.featurize.seed),
        "model_style_encoder": colorizer.meta.get("style_encoder", "unrecorded"),
        "device": str(colorizer.device),
    }
    metrics = _rounded(metrics)
    write_json(layout.metrics("evaluate"), metrics)
    _write_csv(out_dir / "swap_per_part.csv", _swap_rows(swap), SWAP_COLUMNS)
    write_json(layout.summary, headline(metrics, read_json(layout.metrics("train"), default={})))
    _log_headline(metrics, time.perf_counter() - started)
    return metrics


def _log_headline(metrics: dict, seconds: float) -> None:
    b = metrics["benchmark"]
    log.info(
        "evaluate: %d pairs in %.1f s; mean ΔE00 model %.2f | mean colour %.2f | own palette "
        "%.2f | sketch %.2f; hit rate model %.2f; swap projection %s",
        metrics["pairs"], seconds, b["model"]["delta_e"],
        b["mean_colour"]["delta_e"], b["own_palette"]["delta_e"], b["sketch"]["delta_e"],
        b["model"]["hit_rate"], metrics["swap"]["projection"],
    )


def _encoder_provenance(encoder, seed: int) -> dict:
    if encoder is None:
        return {"style_encoder": "oracle", "style_encoder_weights": "none (toon palettes)"}
    return {"style_encoder": encoder.source,
            "style_encoder_weights": encoder.weights_path or f"random (seed {seed})"}


def _swap_rows(swap: dict) -> list[dict]:
    """One row per part in name order (a resumed run reads the parts back from sorted JSON,
    so name order is the one order both paths give), then 'all'."""
    rows = [{"part": part, "projection": round(s["projection"], 4), "count": s["count"]}
            for part, s in sorted(swap["per_part"].items()) if s["projection"] is not None]
    if swap["projection"] is not None:
        rows.append({"part": "all", "projection": round(swap["projection"], 4),
                     "count": swap["scored"]})
    return rows


def _write_csv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _rounded(value, places: int = 4):
    if isinstance(value, float):
        return round(value, places)
    if isinstance(value, dict):
        return {str(k): _rounded(v, places) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, places) for v in value]
    return value
