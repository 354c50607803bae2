"""How closely one sketch agrees with another (e.g. an extractor vs real sketchKeras).

Both are uint8 black-on-white; the reference's size wins (the other is resized
with INTER_AREA). Pearson correlation is over darkness (255 - value) of all
pixels; line-pixel F1 counts a pixel as line when its darkness is >= LINE_DARKNESS
(a clearly visible stroke: value <= 191), chosen once, before any comparison.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

LINE_DARKNESS = 64


def _aligned(sketch: np.ndarray, reference: np.ndarray) -> np.ndarray:
    if sketch.shape != reference.shape:
        sketch = cv2.resize(sketch, reference.shape[::-1], interpolation=cv2.INTER_AREA)
    return sketch


def pearson(sketch: np.ndarray, reference: np.ndarray) -> float:
    a = 255.0 - _aligned(sketch, reference).astype(np.float64).ravel()
    b = 255.0 - reference.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def line_f1(sketch: np.ndarray, reference: np.ndarray) -> float:
    pred = (255 - _aligned(sketch, reference).astype(np.int32)) >= LINE_DARKNESS
    true = (255 - reference.astype(np.int32)) >= LINE_DARKNESS
    tp = float((pred & true).sum())
    denom = pred.sum() + true.sum()
    return 2.0 * tp / denom if denom else 1.0


def load_pairs(folder: str | Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, colour RGB uint8, sketchKeras uint8) for each testK_color/testK_sketchkeras pair."""
    pairs = []
    for colour_path in sorted(Path(folder).glob("*_color.*")):
        stem = colour_path.name.split("_color")[0]
        matches = sorted(Path(folder).glob(f"{stem}_sketchkeras.*"))
        if not matches:
            continue
        bgr = cv2.imread(str(colour_path), cv2.IMREAD_COLOR)
        ref = cv2.imread(str(matches[0]), cv2.IMREAD_GRAYSCALE)
        if bgr is None or ref is None:
            raise ValueError(f"{colour_path}: cannot decode the pair")
        pairs.append((stem, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ref))
    return pairs
