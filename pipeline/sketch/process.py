"""sketchKeras pre- and post-processing, shared by the network and the classical extractors.

Follows lllyasviel/sketchKeras `main.py` + `helper.py` step by step (README: "Sketch extraction"):
  1. resize so the long side is `work` (512 in the original) with INTER_AREA, the
     short side truncated as `int(work / long * short)`;
  2. per colour channel, high-pass = channel - GaussianBlur(channel, sigma 3), both
     uint8 then as signed ints, divided by 128;
  3. divide the three maps by their joint max;
  4. pad (zeros, bottom/right) to work x work; the channels become a batch of three
     single-channel images;
  5. (network) -> crop -> per-pixel max over the three outputs -> `raw` line map;
  6. variant threshold (`enhanced`: values < 0.1 -> 0, `pured`: < 0.18 -> 0), then
     (1 - x) * 255 clipped and truncated to uint8 (the original's median filter of
     size 1 is the identity and is left out).
Finally the sketch is resized back to the input image's size (INTER_AREA when
shrinking, INTER_LINEAR when enlarging), so sketch and colour shards share pixels.
Channel order does not matter: channels are treated alike and only max'ed.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIGMA = 3.0  # Gaussian sigma of the high-pass, in working-size pixels
VARIANT_THRESHOLDS = {"raw": 0.0, "enhanced": 0.1, "pured": 0.18}


@dataclass(frozen=True)
class Prepared:
    """One image ready for the network: `planes` is [3, work, work] float32
    (None for the classical extractors, which need only the geometry)."""

    planes: np.ndarray | None
    height: int  # the resized image inside the padded square
    width: int
    orig_height: int
    orig_width: int


def resize_to_work_size(rgb: np.ndarray, work: int) -> np.ndarray:
    """Step 1: long side to `work`, the short side truncated as the original does."""
    height, width = float(rgb.shape[0]), float(rgb.shape[1])
    if width > height:
        size = (work, int(work / width * height))
    else:
        size = (int(work / height * width), work)
    size = (max(size[0], 1), max(size[1], 1))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def high_pass(rgb: np.ndarray) -> np.ndarray:
    """[3, H, W] float64 signed high-pass maps / 128 (before normalisation)."""
    # cv2 blurs each channel of a 3-channel image independently with the same
    # kernel and rounding as the original's one-channel calls (tested).
    blur = cv2.GaussianBlur(rgb, (0, 0), SIGMA)
    hp = rgb.astype(np.int32) - blur.astype(np.int32)
    return hp.transpose(2, 0, 1).astype(np.float64) / 128.0


def normalise(light: np.ndarray) -> np.ndarray:
    peak = light.max()
    # The original divides by the max unconditionally: a flat image gives NaNs.
    # Zero maps are what a flat image means (no detail), so keep them zero.
    return light / peak if peak > 0 else light


def prepare(rgb: np.ndarray, work: int) -> Prepared:
    small = resize_to_work_size(rgb, work)
    light = normalise(high_pass(small))
    planes = np.zeros((3, work, work), dtype=np.float32)
    h, w = small.shape[:2]
    planes[:, :h, :w] = light
    return Prepared(planes, h, w, rgb.shape[0], rgb.shape[1])


def finish(line: np.ndarray, prep: Prepared, variant: str) -> np.ndarray:
    """Per-pixel max line strengths [3, work, work] (or [work, work]) -> uint8 sketch
    at the original image size, black lines on white."""
    line = np.asarray(line, dtype=np.float32)
    if line.ndim == 3:
        line = line.max(axis=0)
    line = line[: prep.height, : prep.width].copy()
    line[line < VARIANT_THRESHOLDS[variant]] = 0
    sketch = np.clip((1.0 - line) * 255.0, 0, 255).astype(np.uint8)
    return resize_back(sketch, prep.orig_height, prep.orig_width)


def resize_back(sketch: np.ndarray, height: int, width: int) -> np.ndarray:
    if sketch.shape == (height, width):
        return sketch
    shrink = height * width < sketch.shape[0] * sketch.shape[1]
    return cv2.resize(sketch, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def blank_sketch(height: int, width: int) -> np.ndarray:
    """White paper: what a row that could not be read gets, to keep alignment."""
    return np.full((height, width), 255, dtype=np.uint8)
