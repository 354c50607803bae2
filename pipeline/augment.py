"""Augmented-self reference: a colour-preserving, geometrically distorted copy of y.

Training uses the target y itself as the reference. A distorted copy keeps y's
colours (what the style code should carry) but moves every part elsewhere, so the
generator cannot learn to copy the reference pixel for pixel through V(·).

One random draw per copy, composed into a single backward map and one
`cv2.remap` (bilinear, mirrored border), so the image is resampled only once:
    rotation about the centre, uniform in ±max_rotation_deg;
    horizontal flip with probability 1/2;
    crop of crop_side of each side (aspect jittered), stretched back to H×W;
    elastic warp: a coarse ELASTIC_GRID² grid of normal displacements with
    σ = elastic_sigma·size, bicubically interpolated (a smooth TPS-like field).
No colour operation: every output pixel is an interpolation of nearby pixels of
the input, so the palette is unchanged.

`featurize.distortion` picks the strength (`STRENGTHS`): `strong` (this
project's first setting) or `mild`, a third of its rotation and warp and a
crop of at most 15% per side.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ASPECT_JITTER = 0.1
ELASTIC_GRID = 4


@dataclass(frozen=True)
class Strength:
    max_rotation_deg: float
    crop_side: tuple[float, float]
    elastic_sigma: float


STRENGTHS = {
    "strong": Strength(max_rotation_deg=15.0, crop_side=(0.7, 1.0), elastic_sigma=0.03),
    "mild": Strength(max_rotation_deg=5.0, crop_side=(0.85, 1.0), elastic_sigma=0.01),
}


def distort_for_reference(image: np.ndarray, rng: np.random.Generator,
                          strength: str = "strong") -> np.ndarray:
    """uint8 HxWx3 -> a distorted uint8 HxWx3 of the same size (see module docstring)."""
    how = STRENGTHS[strength]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)

    # Rotation about the centre (output coordinates -> rotated coordinates).
    angle = np.deg2rad(rng.uniform(-how.max_rotation_deg, how.max_rotation_deg))
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    x = cos * (u - cx) - sin * (v - cy) + cx
    y = sin * (u - cx) + cos * (v - cy) + cy

    if rng.random() < 0.5:
        x = (w - 1) - x

    # Crop: a window of side fraction s (aspect jittered) somewhere inside the image.
    side = rng.uniform(*how.crop_side)
    aspect = np.exp(rng.uniform(-ASPECT_JITTER, ASPECT_JITTER))
    sx, sy = min(1.0, side * aspect), min(1.0, side / aspect)
    x0, y0 = rng.uniform(0, 1 - sx) * w, rng.uniform(0, 1 - sy) * h
    x = x0 + x * np.float32(sx)
    y = y0 + y * np.float32(sy)

    # Elastic: smooth random displacement field, in source pixels.
    sigma = how.elastic_sigma * min(h, w)
    for coord in (x, y):
        coarse = rng.normal(0.0, sigma, size=(ELASTIC_GRID, ELASTIC_GRID)).astype(np.float32)
        coord += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)

    return cv2.remap(image, x, y, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)
