"""Sketch extraction throughput (not a test).

    python benchmarks/extract.py [--images 4] [--batch 4] [--work-size 512] [--repeats 3]
                                 [--dask-images 256] [--skip-network] [--skip-dask]

(a) the original sketchKeras procedure: one image at a time, its three channels
    one forward pass each of the Keras model (`mod.predict(light_map, batch_size=1)`);
(b) the same Keras model batched: `--batch` images x 3 channels per forward pass;
(c) the extractor's path: batched like (b) through `build_inference` (BatchNorm
    folded, decoder up-sampling + 4x4 convolutions as sub-pixel convolutions);
    all on the same seeded random weights (the real mod.h5 costs the same) and
    images, in interleaved rounds with the float32 matmul ceiling; medians, GMAC/s,
    per-round speed-ups, and the max abs difference of line maps and uint8 sketches;
(d) the classical extractor (params default) on 128 px images;
(e) the extract flow with the classical extractor on a generated shard set, with
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


def conv_gmac(model, size: int) -> float:
    """Multiply-adds of one forward pass on one [size, size, 1] plane, in GMAC."""
    from keras import layers

    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    probe = __import__("keras").Model(model.inputs, [c.output for c in convs])
    outs = probe(np.zeros((1, 16, 16, 1), np.float32))
    return sum((o.shape[1] * size // 16) ** 2 * int(np.prod(c.kernel.shape))
               for c, o in zip(convs, outs)) / 1e9


def matmul_ceiling(n: int = 2048, reps: int = 3) -> float:
    """Best float32 GMAC/s of an n x n x n tf.matmul: this CPU's float32 ceiling."""
    import tensorflow as tf

    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)
    mm = tf.function(tf.matmul)
    mm(a, b).numpy()
    return max(n ** 3 / timed(lambda: mm(a, b).numpy())[1] for _ in range(reps)) / 1e9


def per_call_overhead(ex, reps: int = 20) -> float:
    """Seconds of one traced call on a 16 x 16 plane (dispatch, not arithmetic)."""
    import tensorflow as tf

    call = tf.function(lambda x: ex.model(x, training=False))
    tiny = np.zeros((1, 16, 16, 1), np.float32)
    call(tiny)
    return float(np.median([timed(lambda: call(tiny).numpy())[1] for _ in range(reps)]))


def bench_network(n: int, batch: int, size: int, repeats: int) -> list[tuple[str, str]]:
    """Interleaved rounds of (a) the one-image loop, (b) the same Keras graph
    batched, (c) the extractor's batched path (`build_inference`), and the matmul
    ceiling; medians over rounds, and the per-round ratios (robust to other load)."""
    import resource

    from pipeline.sketch import sketchkeras as sk

    images = load_images(n)
    model = sk.randomize(sk.build_sketchkeras(), seed=0)
    ex = sk.SketchKerasExtractor(model, "enhanced", batch_images=batch, work_size=size)

    def batched_model(imgs):
        out = []
        for s in range(0, len(imgs), batch):
            preps = [process.prepare(img, size) for img in imgs[s:s + batch]]
            lines = ex.forward_model(np.concatenate([p.planes for p in preps]))
            out += [process.finish(lines[3 * i:3 * i + 3], p, ex.variant) for i, p in enumerate(preps)]
        return out

    ex.extract(images[:1])  # trace every graph once, outside the timings
    batched_model(images[:1])
    ex.extract_one_by_one(images[:1])
    gmac = 3 * conv_gmac(model, size)  # per image: three channel planes
    fast_gmac = gmac * (1 - (1 - 25 / 64) * decoder_share(model, size))
    t = {"a": [], "b": [], "c": [], "ceiling": []}
    for _ in range(repeats):
        single, ta = timed(ex.extract_one_by_one, images)
        ceiling = matmul_ceiling()
        plain, tb = timed(batched_model, images)
        fast, tc = timed(ex.extract, images)
        t["a"].append(ta), t["b"].append(tb), t["c"].append(tc)
        t["ceiling"].append(max(ceiling, matmul_ceiling()))
    med = {k: float(np.median(v)) for k, v in t.items()}
    rounds_b = np.array(t["a"]) / np.array(t["b"])
    rounds_c = np.array(t["a"]) / np.array(t["c"])
    ratio_b, ratio_c = float(np.median(rounds_b)), float(np.median(rounds_c))

    def spread(r):
        return f"rounds {', '.join(f'{x:.2f}' for x in r)}"
    rate = {k: gmac * n / med[k] for k in "abc"}
    ceiling = med["ceiling"]
    # Line maps: the Keras model one channel at a time vs the extractor's path.
    diffs = []
    for prep, out in ex.line_maps(images):
        ref = np.stack([ex.forward_model(prep.planes[c:c + 1])[0] for c in range(3)])
        diffs.append(float(np.abs(ref - out).max()))
    sketch_diff = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(single, fast))
    plain_diff = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(single, plain))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    px = f"{size} px, {n} images, median of {repeats} interleaved rounds"
    return [
        ("sketchKeras multiply-adds per image (3 channel planes)",
         f"{gmac:.1f} GMAC (extractor's path: {fast_gmac:.1f} GMAC)"),
        ("float32 matmul ceiling (2048^3 tf.matmul, best of 2 x 3 per round)", f"{ceiling:.0f} GMAC/s"),
        ("per-call overhead (16 px plane)", f"{1e3 * per_call_overhead(ex):.1f} ms"),
        (f"(a) original: 1 image x 3 passes of the Keras model, {px}",
         f"{n / med['a']:.3f} images/s ({rate['a']:.0f} GMAC/s)"),
        (f"(b) Keras model batched, {batch} images x 3 channels per pass",
         f"{n / med['b']:.3f} images/s ({rate['b']:.0f} GMAC/s = {rate['b'] / ceiling:.0%} of ceiling); "
         f"{ratio_b:.2f}x (a) ({spread(rounds_b)})"),
        ("(b) bound: ceiling / (a) GMAC/s, the most any float32 batching of the same "
         "multiply-adds can gain", f"{ceiling / rate['a']:.2f}x"),
        (f"(c) extractor: batched x{batch}, BN folded, sub-pixel decoder convolutions",
         f"{n / med['c']:.3f} images/s ({fast_gmac * n / med['c']:.0f} GMAC/s actual); "
         f"{ratio_c:.2f}x (a) ({spread(rounds_c)})"),
        ("(a) vs (c) max abs difference",
         f"line maps {max(diffs):.2e}, uint8 sketches {sketch_diff} ((a) vs (b): {plain_diff})"),
        ("peak RSS of the benchmark process", f"{peak:.0f} MB"),
    ]


def decoder_share(model, size: int) -> float:
    """Share of the multiply-adds in the four up-sampling 4x4 convolutions."""
    from keras import layers

    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    total = conv_gmac(model, size)
    # Decoder 4x4 convs run at 1/8, 1/4, 1/2, 1 of the size on 1024/512/256/128 inputs.
    up = sum((size // 2 ** (3 - j)) ** 2 * int(np.prod(convs[9 + 2 * j].kernel.shape))
             for j in range(4)) / 1e9
    return up / total


def bench_classical(n: int = 64) -> list[tuple[str, str]]:
    cfg = parse_config({}).extract
    images = load_images(n, size=128)
    ex = classical.ClassicalExtractor(cfg.classical, cfg.variant, cfg.work_size)
    ex.extract(images[:2])
    _, seconds = timed(ex.extract, images)
    return [(f"(d) classical '{cfg.classical}', 128 px images (work size {cfg.work_size})",
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
            results.append((f"(e) extract flow, classical, {n} x 128 px, {label}",
                            f"{metrics['images_per_s']:.1f} images/s in tasks, {seconds:.1f} s wall "
                            "(incl. cluster start)"))
    return results


def main() -> None:
    # A private Prefect home: the shared default database locks under concurrent runs.
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="s2p-bench-prefect-"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--work-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dask-images", type=int, default=256)
    parser.add_argument("--skip-network", action="store_true")
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()

    rows = [("machine", f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start")]
    if not args.skip_network:
        rows += bench_network(args.images, args.batch, args.work_size, args.repeats)
    rows += bench_classical()
    if not args.skip_dask:
        rows += bench_dask(args.dask_images)
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
