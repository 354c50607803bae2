"""Classical sketch extractors: the fallback when sketchKeras weights are absent.

Each variant maps an image, resized exactly as sketchKeras resizes it, to a line
strength map in [0, 1] (the role of the network's output), and then shares
sketchKeras's post-processing (variant threshold, inversion, resize back). So a
classical sketch has the same geometry, value range and `raw|enhanced|pured`
semantics as a real one.

Variants (parameters fixed a priori from their sources, never fitted to the
sketchKeras reference pairs; `benchmarks/sketch_agreement.py` only picks one):
  highpass       sketchKeras's own input, per-channel high-pass / joint max; the
                 dark side (pixel below its blur) as line, max over channels, then
                 lllyasviel's `superlize_pic` tone curve (x 2.33333, clip at 1);
  highpass_grey  the same on the greyscale image (helper.get_light_map);
  xdog           eXtended Difference of Gaussians (Winnemoeller et al. 2012) on
                 grey in [0, 1]: sigma 1.0, k 1.6, tau 0.98, phi 200 and eps 0
                 (the zero crossing; the often-quoted eps -0.1 belongs to other
                 intensity scalings and marks no pixel at all on [0, 1] input).
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.sketch import process

SUPERLIZE = 2.33333  # helper.superlize_pic's gain
VARIANTS = ("highpass", "highpass_grey", "xdog")
DEFAULT_VARIANT = "highpass_grey"  # best agreement with the real pairs (benchmarks/sketch_agreement.py)


def _superlize(x: np.ndarray) -> np.ndarray:
    return np.clip(x * SUPERLIZE, 0.0, 1.0)


def line_highpass(small: np.ndarray) -> np.ndarray:
    light = process.normalise(process.high_pass(small))
    return _superlize(np.clip(-light, 0, None).max(axis=0))


def line_highpass_grey(small: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    blur = cv2.GaussianBlur(grey, (0, 0), process.SIGMA)
    dark = np.clip(blur.astype(np.int32) - grey.astype(np.int32), 0, None) / 128.0
    peak = np.abs(grey.astype(np.int32) - blur.astype(np.int32)).max() / 128.0
    return _superlize(dark / peak if peak > 0 else dark)


def line_xdog(small: np.ndarray, sigma: float = 1.0, k: float = 1.6, tau: float = 0.98,
              eps: float = 0.0, phi: float = 200.0) -> np.ndarray:
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    dog = cv2.GaussianBlur(grey, (0, 0), sigma) - tau * cv2.GaussianBlur(grey, (0, 0), sigma * k)
    paper = np.where(dog >= eps, 1.0, 1.0 + np.tanh(phi * (dog - eps)))
    return np.clip(1.0 - paper, 0.0, 1.0)


LINES = {"highpass": line_highpass, "highpass_grey": line_highpass_grey, "xdog": line_xdog}


class ClassicalExtractor:
    method_used = "classical"

    def __init__(self, name: str = DEFAULT_VARIANT, variant: str = "enhanced", work_size: int = 512):
        if name not in LINES:
            raise ValueError(f"unknown classical extractor {name!r}; choose from {VARIANTS}")
        self.name = name
        self.variant = variant
        self.work_size = work_size

    def describe(self) -> dict:
        """What makes these sketches (metrics, shard fingerprints)."""
        return {"method_used": self.method_used, "classical": self.name,
                "variant": self.variant, "work_size": self.work_size}

    def line_map(self, rgb: np.ndarray) -> tuple[process.Prepared, np.ndarray]:
        small = process.resize_to_work_size(rgb, self.work_size)
        prep = process.Prepared(None, small.shape[0], small.shape[1], rgb.shape[0], rgb.shape[1])
        return prep, LINES[self.name](small).astype(np.float32)

    def extract(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [process.finish(line, prep, self.variant) for prep, line in map(self.line_map, images)]
