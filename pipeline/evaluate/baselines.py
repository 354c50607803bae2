"""Reference points for the benchmark table, computed on the same pairs as the model.

Each baseline answers "what ΔE00 does a trivial colorizer get?":
  sketch       the sketch itself, as grey (no colour at all);
  mean_colour  the reference's mean sRGB colour over all its pixels, painted
               everywhere and multiplied by the sketch so its lines stay dark
               (what a model that only reads the reference's average gets);
  own_palette  A's own colour image: the best any model can do while ignoring the
               reference (it knows A's palette exactly, which no model does).
The toon benchmark always knows A's image, so `own_palette` is exact, not estimated.
"""
from __future__ import annotations

import numpy as np

BASELINES = ("sketch", "mean_colour", "own_palette")


def sketch_baseline(sketch: np.ndarray) -> np.ndarray:
    """HxW uint8 sketch -> HxWx3 grey image."""
    return np.repeat(np.asarray(sketch, np.uint8)[..., None], 3, axis=2)


def mean_colour_baseline(sketch: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The reference's mean colour everywhere, darkened under the sketch's lines."""
    mean = np.asarray(reference, np.float64).reshape(-1, 3).mean(axis=0)
    paper = np.asarray(sketch, np.float64)[..., None] / 255.0
    return np.clip(paper * mean + 0.5, 0, 255).astype(np.uint8)


def own_palette_baseline(own_image: np.ndarray) -> np.ndarray:
    return np.asarray(own_image, np.uint8)


def baseline_outputs(sketch: np.ndarray, reference: np.ndarray, own_image: np.ndarray) -> dict:
    """{baseline name: HxWx3 uint8 output} for one benchmark pair."""
    return {
        "sketch": sketch_baseline(sketch),
        "mean_colour": mean_colour_baseline(sketch, reference),
        "own_palette": own_palette_baseline(own_image),
    }
