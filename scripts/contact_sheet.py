"""Contact sheet of toon characters, to check the generator by eye.

    python scripts/contact_sheet.py --count 48 --size 128 --out contact_sheet.png

Top: `count` characters (seeds start..start+count-1), `--cols` per row.
Below: two geometries, each re-rendered with 4 palettes, then their part masks.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.toon import generate, rerender, sample_palette  # noqa: E402

# One display colour per part label (0..7) for the mask row.
MASK_RGB = np.array([(235, 235, 235), (255, 205, 170), (150, 80, 200), (40, 160, 255),
                     (230, 60, 60), (60, 150, 60), (255, 200, 0), (0, 0, 0)], np.uint8)


def sheet(tiles: list[np.ndarray], cols: int, pad: int = 2) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        out[y:y + h, x:x + w] = t
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("contact_sheet.png"))
    a = ap.parse_args(argv)
    if a.count < 1 or a.size < 8 or a.cols < 1:
        ap.error("--count and --cols must be >= 1, --size >= 8")

    t0 = time.perf_counter()
    toons = [generate(a.start + i, a.size) for i in range(a.count)]
    dt = time.perf_counter() - t0
    tiles = [t.image for t in toons]
    cols = min(a.cols, a.count)
    blocks = [sheet(tiles, cols)]

    # Re-render rows: the same geometry with its own palette, then 3 others.
    rng = np.random.default_rng(12345)
    rer, masks = [], []
    for t in toons[:2]:
        rer.append(t.image)
        rer += [rerender(t, sample_palette(rng)) for _ in range(3)]
        masks += [MASK_RGB[t.mask]] * 4
    blocks += [sheet(rer, 8), sheet(masks, 8)]
    width = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255)
              for b in blocks]
    sep = np.full((6, width, 3), 120, np.uint8)
    out = np.concatenate([blocks[0], sep, blocks[1], blocks[2]])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(a.out)
    print(f"wrote {a.out} ({a.count} toons at {a.size}px, {a.count / dt:.1f} images/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
