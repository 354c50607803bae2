"""Sample grids: rows of images (grey or RGB, any sizes) tiled into one RGB picture."""
from __future__ import annotations

import cv2
import numpy as np


def tile(rows: list[list[np.ndarray]], cell: int, gap: int = 2) -> np.ndarray:
    """Each image letterboxed (white) into a cell x cell square; gaps are mid-grey."""
    ncols = max(len(r) for r in rows)
    h = len(rows) * cell + (len(rows) + 1) * gap
    w = ncols * cell + (ncols + 1) * gap
    canvas = np.full((h, w, 3), 128, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            top, left = gap + i * (cell + gap), gap + j * (cell + gap)
            canvas[top : top + cell, left : left + cell] = _fit(img, cell)
    return canvas


def _fit(img: np.ndarray, cell: int) -> np.ndarray:
    img = np.asarray(img, np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    h, w = img.shape[:2]
    scale = cell / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    out = np.full((cell, cell, 3), 255, np.uint8)
    top, left = (cell - nh) // 2, (cell - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return out
