"""Sketch extraction throughput (not a test).

    python benchmarks/extract.py [--images 4] [--batch 4] [--dask-images 256] [--skip-network]

(a) the original sketchKeras procedure: one image at a time, its three channels
    one forward pass each (`mod.predict(light_map, batch_size=1)`);
(b) the batched procedure: `--batch` images x 3 channels per forward pass;
    both on the same seeded random weights and the same images at working size
    512, with the max abs difference of their line maps and of the uint8 sketches;
(c) the classical extractor (params default) on 128 px images;
(d) the extract flow with the classical extractor on a generated shard set, with
    the local Dask runner at 1 and 2 workers and the in-process runner.
Images are the real colour samples under ../shared when present, else synthetic.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import parse_config  # noqa: E402
from pipeline.sketch import classical, process  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "real" / "color"


def load_images(n: int, size: int | None = None) -> list[np.ndarray]:
    paths = sorted(SAMPLES.glob("*.jpg")) if SAMPLES.is_dir() else []
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        if paths:
            img = cv2.cvtColor(cv2.imread(str(paths[i % len(paths)])), cv2.COLOR_BGR2RGB)
        else:
            img = rng.integers(0, 256, (600, 450, 3), dtype=np.uint8)
            img = cv2.GaussianBlur(img, (0, 0), 4)
        if size:
            h, w = img.shape[:2]
            s = min(h, w)
            img = cv2.resize(img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s],
                             (size, size), interpolation=cv2.INTER_AREA)
        images.append(img)
    return images


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def bench_network(n: int, batch: int) -> list[tuple[str, str]]:
    import resource

    from pipeline.sketch import sketchkeras as sk

    images = load_images(n)
    model = sk.randomize(sk.build_sketchkeras(), seed=0)
    ex = sk.SketchKerasExtractor(model, "enhanced", batch_images=batch, work_size=512)
    ex.extract(images[:1])  # trace the graph once, outside the timings
    single, t_single = timed(ex.extract_one_by_one, images)
    lines, t_batched = timed(ex.line_maps, images)
    batched = [process.finish(out, prep, ex.variant) for prep, out in lines]
    # Line-map difference: the single path, recomputed per channel.
    diffs = []
    for prep, out in lines:
        ref = np.stack([ex.forward(prep.planes[c:c + 1])[0] for c in range(3)])
        diffs.append(float(np.abs(ref - out).max()))
    sketch_diff = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(single, batched))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [
        (f"(a) sketchKeras original, 1 image x 3 passes, 512 px ({n} images)",
         f"{n / t_single:.3f} images/s ({t_single / n:.1f} s/image)"),
        (f"(b) sketchKeras batched, {batch} images x 3 channels per pass, 512 px",
         f"{n / t_batched:.3f} images/s ({t_batched / n:.1f} s/image)"),
        ("(a) vs (b) max abs difference", f"line maps {max(diffs):.2e}, uint8 sketches {sketch_diff}"),
        ("peak RSS of the benchmark process", f"{peak:.0f} MB"),
    ]


def bench_classical(n: int = 64) -> list[tuple[str, str]]:
    cfg = parse_config({}).extract
    images = load_images(n, size=128)
    ex = classical.ClassicalExtractor(cfg.classical, cfg.variant, cfg.work_size)
    ex.extract(images[:2])
    _, seconds = timed(ex.extract, images)
    return [(f"(c) classical '{cfg.classical}', 128 px images (work size {cfg.work_size})",
             f"{n / seconds:.1f} images/s")]


def bench_dask(n: int) -> list[tuple[str, str]]:
    import pyarrow as pa

    from flows.extract import extract
    from pipeline.images import encode_image
    from pipeline.layout import Layout
    from pipeline.shards import COLOR_SCHEMA, shard_name, write_manifest, write_shard

    images = load_images(n, size=128)
    rows_per_shard = max(1, n // 8)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        colour = Layout(tmp).shards("color")
        for s in range(0, n, rows_per_shard):
            rows = [{"id": f"{i:016x}", "split": "train", "width": 128, "height": 128,
                     "color": encode_image(images[i], "png_fast"),
                     "source": "bench", "sha256": "", "mask": None, "palette": None}
                    for i in range(s, min(n, s + rows_per_shard))]
            write_shard(colour / shard_name(s // rows_per_shard),
                        pa.Table.from_pylist(rows, schema=COLOR_SCHEMA), "color", 32, f"bench-{s}")
        write_manifest(colour, "color")
        for kind, workers in (("inprocess", 1), ("local_dask", 1), ("local_dask", 2)):
            sketch = Layout(tmp).shards("sketch")
            for p in sketch.glob("*"):
                p.unlink()
            cfg = parse_config({"data": {"root": tmp},
                                "extract": {"method": "classical", "shards_in_flight": 4,
                                            "runner": {"kind": kind, "workers": workers}}})
            metrics, seconds = timed(extract, cfg)
            label = "in-process" if kind == "inprocess" else f"local Dask, {workers} worker(s)"
            results.append((f"(d) extract flow, classical, {n} x 128 px, {label}",
                            f"{metrics['images_per_s']:.1f} images/s in tasks, {seconds:.1f} s wall "
                            "(incl. cluster start)"))
    return results


def main() -> None:
    # A private Prefect home: the shared default database locks under concurrent runs.
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="s2p-bench-prefect-"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dask-images", type=int, default=256)
    parser.add_argument("--skip-network", action="store_true")
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()

    rows = [("machine", f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start")]
    if not args.skip_network:
        rows += bench_network(args.images, args.batch)
    rows += bench_classical()
    if not args.skip_dask:
        rows += bench_dask(args.dask_images)
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
