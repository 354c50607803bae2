"""Colour science for the benchmark: sRGB -> CIELAB, CIEDE2000, colourfulness.

Everything is vectorised numpy over arrays of any leading shape, so a whole
image pair is one call. CIEDE2000 follows Sharma, Wu & Dalal (2005), "The
CIEDE2000 color-difference formula: implementation notes, supplementary test
data, and mathematical observations" (Color Res. Appl. 30(1)); the tests check
it against all 34 pairs of their Table 1.
"""
from __future__ import annotations

import numpy as np

# sRGB primaries, D65 white, 2-degree observer (IEC 61966-2-1).
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_D65 = np.array([0.95047, 1.0, 1.08883])
_EPS = 216 / 24389  # CIE's exact (6/29)^3
_KAPPA = 24389 / 27


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 (0..255) or float (0..1) sRGB [..., 3] -> CIELAB [..., 3] float64."""
    rgb = np.asarray(rgb)
    c = rgb.astype(np.float64) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _D65
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray, kL=1.0, kC=1.0, kH=1.0) -> np.ndarray:
    """CIEDE2000 colour difference between CIELAB arrays [..., 3] (broadcasting)."""
    lab1 = np.asarray(lab1, dtype=np.float64)
    lab2 = np.asarray(lab2, dtype=np.float64)
    L1, a1, b1 = np.moveaxis(lab1, -1, 0)
    L2, a2, b2 = np.moveaxis(lab2, -1, 0)

    # Step 1: a' stretched so that near-neutral colours get a sensible hue.
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    c7 = c_bar**7
    g = 0.5 * (1 - np.sqrt(c7 / (c7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360

    # Step 2: differences; hue difference wraps to (-180, 180], 0 for a neutral colour.
    chroma_prod = c1p * c2p
    neutral = chroma_prod == 0
    dLp = L2 - L1
    dCp = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(neutral, 0.0, dh)
    dHp = 2 * np.sqrt(chroma_prod) * np.sin(np.radians(dh) / 2)

    # Step 3: weighting functions at the pair's mean lightness, chroma and hue.
    L_bar = (L1 + L2) / 2
    Cp_bar = (c1p + c2p) / 2
    h_sum = h1p + h2p
    far = np.abs(h1p - h2p) > 180
    h_bar = np.where(far, np.where(h_sum < 360, h_sum + 360, h_sum - 360), h_sum) / 2
    h_bar = np.where(neutral, h_sum, h_bar)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_bar - 30))
        + 0.24 * np.cos(np.radians(2 * h_bar))
        + 0.32 * np.cos(np.radians(3 * h_bar + 6))
        - 0.20 * np.cos(np.radians(4 * h_bar - 63))
    )
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    cp7 = Cp_bar**7
    r_c = 2 * np.sqrt(cp7 / (cp7 + 25.0**7))
    l50 = (L_bar - 50) ** 2
    s_l = 1 + 0.015 * l50 / np.sqrt(20 + l50)
    s_c = 1 + 0.045 * Cp_bar
    s_h = 1 + 0.015 * Cp_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c

    tl, tc, th = dLp / (kL * s_l), dCp / (kC * s_c), dHp / (kH * s_h)
    return np.sqrt(tl**2 + tc**2 + th**2 + r_t * tc * th)


def delta_e_map(rgb1: np.ndarray, rgb2: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 between two sRGB images (HxWx3 uint8) -> HxW float."""
    return ciede2000(srgb_to_lab(rgb1), srgb_to_lab(rgb2))


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness M of an sRGB image (0..255 scale).

    M = sigma_rgyb + 0.3 * mu_rgyb over the opponent channels rg = R - G and
    yb = (R + G) / 2 - B; ~0 for grey images, ~30-60 for typical illustrations.
    """
    arr = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    rg = arr[:, 0] - arr[:, 1]
    yb = 0.5 * (arr[:, 0] + arr[:, 1]) - arr[:, 2]
    sigma = np.hypot(rg.std(), yb.std())
    mu = np.hypot(rg.mean(), yb.mean())
    return float(sigma + 0.3 * mu)
