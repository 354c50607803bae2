"""Tiny aligned colour/sketch/style shard sets for tests and benchmarks/train.py.

Not a dataset generator for training (that is ingest's toon source): these
are random flat-colour shapes with a sketch made from them, and style codes
that are a fixed random projection of each image's colour histogram, so a
code carries its image's colours the way V(y) does, cheaply.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from pipeline.images import encode_image
from pipeline.layout import SHARD_SETS, Layout
from pipeline.shards import (
    COLOR_SCHEMA,
    SKETCH_SCHEMA,
    assign_split,
    shard_name,
    style_schema,
    write_manifest,
    write_shard,
)


def _image(rng: np.random.Generator, size: int) -> np.ndarray:
    img = np.full((size, size, 3), rng.integers(150, 256, 3), np.uint8)
    for _ in range(4):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(size // 8, size // 3))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), r, colour, -1)
        else:
            cv2.rectangle(img, (x - r, y - r), (x + r, y + r), colour, -1)
    return img


def sketch_of(img: np.ndarray, kind: str) -> np.ndarray:
    """'grey': the grey image (a pixel-wise function, for alignment checks);
    'edges': black outlines on white."""
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if kind == "grey":
        return grey
    return 255 - cv2.Canny(grey, 20, 60)


def _code(img: np.ndarray, proj: np.ndarray) -> np.ndarray:
    hist = cv2.calcHist([img], [0, 1, 2], None, [4, 4, 4], [0, 256] * 3).ravel()
    return np.maximum(proj @ (hist / hist.sum()), 0).astype(np.float16)


def _png(img: np.ndarray) -> bytes:
    return encode_image(img, "png_fast")


def write_fake_shards(root: str | Path, rows: int, size: int, *, shard_rows: int = 8,
                      row_group_rows: int = 4, dim: int = 4096, aug: int = 1,
                      sketch: str = "edges", seed: int = 0,
                      splits: tuple[float, float] = (0.8, 0.1),
                      corrupt: tuple[int, ...] = ()) -> list[dict]:
    """Write shards/{color,sketch,style} under `root`; returns the rows' ids and splits.

    Rows whose index is in `corrupt` get colour bytes that do not decode."""
    layout = Layout(root)
    rng = np.random.default_rng(seed)
    proj = np.random.default_rng(12345).random((dim, 64)).astype(np.float32) * 4
    written = []
    for s, start in enumerate(range(0, rows, shard_rows)):
        colour, sk, style = [], [], []
        for i in range(start, min(rows, start + shard_rows)):
            img = _image(rng, size)
            row_id = f"{seed:04x}{i:012x}"
            split = assign_split(row_id, *splits)
            data = b"not a png" if i in corrupt else _png(img)
            colour.append({"id": row_id, "split": split, "color": data, "width": size,
                          "height": size, "source": f"fake:{i}", "sha256": row_id,
                          "mask": None, "palette": None})
            sk.append({"id": row_id, "sketch": _png(sketch_of(img, sketch))})
            # A distorted copy's code: the histogram of a random crop.
            augs = []
            for _ in range(aug):
                y, x = (int(v) for v in rng.integers(0, size // 2, 2))
                crop = img[y:y + size // 2, x:x + size // 2]
                augs.append(_code(np.ascontiguousarray(crop), proj))
            style.append({"id": row_id, "style": _code(img, proj).tolist(),
                          "style_aug": [a.astype(np.float16).tolist() for a in augs]})
            written.append({"id": row_id, "split": split})
        name = shard_name(s)
        write_shard(layout.shards("color") / name, pa.Table.from_pylist(colour, COLOR_SCHEMA),
                    "color", row_group_rows)
        write_shard(layout.shards("sketch") / name, pa.Table.from_pylist(sk, SKETCH_SCHEMA),
                    "sketch", row_group_rows)
        write_shard(layout.shards("style") / name,
                    pa.Table.from_pylist(style, style_schema(dim)), "style", row_group_rows)
    for name in SHARD_SETS:
        write_manifest(layout.shards(name), name)
    return written
