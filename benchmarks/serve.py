"""`s2p serve` request latency and throughput, measured from a client over HTTP.

    python benchmarks/serve.py [--checkpoint data/models/generator.pt] [--size 512]
                               [--requests 20] [--clients 4]

Starts `s2p serve --port 0` as its own process (as a user would), then:
  1. latency: `--requests` sequential paintings of one sketch with one uploaded
     reference at `--size` px (median, p95; after two warm-up requests);
  2. throughput: the same number of requests from `--clients` concurrent clients
     (images/s, and latency under that load);
  3. memory: the server's peak RSS after one 1024-px request and after 8
     concurrent ones (one model, one painting at a time: it should not grow).
The sketch and reference are ../shared samples when present, else toon pictures.
Without the checkpoint, an untrained generator of params.yaml's architecture is
exported to a temporary folder (the cost of a painting does not depend on the
weights) and the output says so.
"""
from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLES = REPO.parent / "shared" / "samples" / "real"
SKETCH = SAMPLES / "sketch" / "s2p_test_2.jpg"
REFERENCE = SAMPLES / "color" / "s2p_style_1.jpg"


def untrained_export(folder: Path) -> Path:
    """params.yaml's generator, randomly initialised, exported like the train stage does."""
    import torch

    from pipeline.config import load_config
    from pipeline.models import build_generator, save_generator
    from pipeline.style_encoder import resolve_weights

    cfg = load_config(REPO / "params.yaml")
    torch.manual_seed(0)
    extra = {"resolution": cfg.data.resolution,
             "featurize": cfg.featurize.model_dump(include={"weights", "input_size", "seed"}),
             "extract": cfg.extract.model_dump(include={"method", "weights", "variant"}),
             "style_encoder": "imagenet" if resolve_weights(cfg.featurize.weights) else "random"}
    return save_generator(build_generator(cfg.model), cfg.model, folder / "generator.pt", extra)


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def inputs() -> tuple[str, bytes, bytes]:
    if SKETCH.is_file() and REFERENCE.is_file():
        return f"{SKETCH.name} + {REFERENCE.name}", SKETCH.read_bytes(), REFERENCE.read_bytes()
    from pipeline import toon
    from pipeline.colorize import to_grey

    return ("toon sketch + toon reference (../shared is absent)",
            png(to_grey(toon.generate(1, 512).image)), png(toon.generate(2, 256).image))


def start_server(checkpoint: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--port", "0",
                             "-c", str(checkpoint), "--device", "cpu"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.match(r"s2p serve: (\S+) ", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, match.group(1)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def timed_paint(client: httpx.Client, sketch: bytes, reference: bytes, size: int) -> float:
    started = time.perf_counter()
    r = client.post("/api/paint", files=[("sketch", ("sketch.png", sketch)),
                                         ("references", ("reference.png", reference))],
                    data={"size": str(size)})
    elapsed = time.perf_counter() - started
    if r.status_code != 200:
        raise SystemExit(f"paint failed: {r.status_code} {r.text[:200]}")
    return elapsed


def summary(latencies: list[float]) -> str:
    values = np.array(latencies) * 1000
    return f"median {np.median(values):.0f} ms, p95 {np.percentile(values, 95):.0f} ms (n={len(values)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "data" / "models" / "generator.pt"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint)
        if not checkpoint.is_file():
            checkpoint = untrained_export(Path(tmp))
            print(f"{args.checkpoint} is absent: an untrained generator of params.yaml's "
                  "architecture stands in (same cost per painting)")
        label, sketch, reference = inputs()
        proc, url = start_server(checkpoint)
        try:
            with httpx.Client(base_url=url, timeout=600) as client:
                info = client.get("/api/info").json()
                print(f"server {url}: model {info['model']['depth']} levels, base width "
                      f"{info['model']['base_width']}, trained at {info['resolution']} px, "
                      f"style encoder {info['style_encoder']['in_use']}; inputs: {label}")
                for _ in range(2):
                    timed_paint(client, sketch, reference, args.size)
                warm_rss = peak_rss_mb(proc.pid)
                sequential = [timed_paint(client, sketch, reference, args.size)
                              for _ in range(args.requests)]
                print(f"1 client, {args.size} px: {summary(sequential)}")

                started = time.perf_counter()
                with ThreadPoolExecutor(args.clients) as pool:
                    loaded = list(pool.map(lambda _: timed_paint(client, sketch, reference, args.size),
                                           range(args.requests)))
                wall = time.perf_counter() - started
                print(f"{args.clients} clients, {args.size} px: {args.requests / wall:.2f} paintings/s "
                      f"({1 / np.median(sequential):.2f}/s one at a time); latency {summary(loaded)}")

                timed_paint(client, sketch, reference, 1024)
                one_rss = peak_rss_mb(proc.pid)
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda _: timed_paint(client, sketch, reference, 1024), range(8)))
                print(f"server peak RSS: {warm_rss:.0f} MB after the {args.size}-px warm-up, "
                      f"{one_rss:.0f} MB after one 1024-px request, "
                      f"{peak_rss_mb(proc.pid):.0f} MB after 8 concurrent 1024-px requests")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
