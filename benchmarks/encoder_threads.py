"""The style encoder alone on 1 and 2 torch threads (no Prefect, no Dask).

    python benchmarks/encoder_threads.py --repeats 2

Separates torch's own thread scaling from what a Dask worker adds: VGG19
(`featurize` settings: 128 px, bf16, code `bands`, random weights) on a batch of
32, interleaved rounds, forwards/s per round.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(threads: int, batch: int) -> None:
    sys.path.insert(0, str(REPO))
    import torch

    from pipeline.style_encoder import StyleEncoder

    torch.set_num_threads(threads)
    encoder = StyleEncoder(None, 128, 0, "bf16", "bands")
    x = torch.rand(batch, 3, 128, 128)
    with torch.no_grad():
        encoder(x)  # warm-up
        started = time.perf_counter()
        for _ in range(4):
            encoder(x)
    print(round(4 * batch / (time.perf_counter() - started), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.batch)
    for round_ in range(args.repeats):
        for threads in (1, 2):
            out = subprocess.run([sys.executable, __file__, "--child", str(threads),
                                  "--batch", str(args.batch)], capture_output=True, text=True,
                                 check=True)
            print(f"round {round_ + 1}: {threads} thread(s) {out.stdout.strip()} forwards/s",
                  flush=True)


if __name__ == "__main__":
    main()
