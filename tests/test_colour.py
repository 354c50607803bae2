"""CIEDE2000 against the published test data, Lab conversion, colourfulness."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluate.colour import ciede2000, colourfulness, delta_e_map, srgb_to_lab

# Sharma, Wu & Dalal (2005), Table 1: L1 a1 b1  L2 a2 b2  dE00 (rounded to 4 places).
SHARMA = np.array(
    [
        [50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425],
        [50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615],
        [50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412],
        [50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669],
        [50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461],
        [50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065],
        [50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492],
        [50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977],
        [50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030],
        [50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000],
        [60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644],
        [63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630],
        [61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731],
        [35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645],
        [22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373],
        [36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146],
        [90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441],
        [90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381],
        [6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377],
        [2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082],
    ]
)


def test_sharma_table_all_34_pairs():
    assert SHARMA.shape == (34, 7)
    got = ciede2000(SHARMA[:, 0:3], SHARMA[:, 3:6])
    # The table is rounded to 4 decimals: rounding ours must give the same digits.
    np.testing.assert_allclose(got, SHARMA[:, 6], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.round(got, 4), SHARMA[:, 6])
    # The formula is symmetric.
    np.testing.assert_allclose(ciede2000(SHARMA[:, 3:6], SHARMA[:, 0:3]), got, atol=1e-10)


def test_identical_colours_score_zero():
    lab = srgb_to_lab(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    assert np.abs(ciede2000(lab, lab)).max() == 0.0


def test_lab_conversion_known_values_and_skimage():
    # White is L=100, a=b=0; black is 0; pure sRGB red is about (53.24, 80.09, 67.20).
    np.testing.assert_allclose(srgb_to_lab(np.array([255, 255, 255], np.uint8)), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(srgb_to_lab(np.array([0, 0, 0], np.uint8)), [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(srgb_to_lab(np.array([255, 0, 0], np.uint8)), [53.24, 80.09, 67.20], atol=0.02)
    skcolor = pytest.importorskip("skimage.color")
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(srgb_to_lab(rgb), skcolor.rgb2lab(rgb), atol=0.02)
    lab2 = srgb_to_lab(rgb[::-1])
    np.testing.assert_allclose(
        ciede2000(srgb_to_lab(rgb), lab2), skcolor.deltaE_ciede2000(srgb_to_lab(rgb), lab2), atol=1e-6
    )


def test_delta_e_map_shape_and_order():
    a = np.full((4, 5, 3), 128, np.uint8)
    near, far = a.copy(), a.copy()
    near[..., 0] += 5
    far[..., 0] += 60
    d_near, d_far = delta_e_map(a, near), delta_e_map(a, far)
    assert d_near.shape == (4, 5)
    assert 0 < d_near.mean() < d_far.mean()


def test_colourfulness():
    grey = np.full((8, 8, 3), 90, np.uint8)
    assert colourfulness(grey) == 0.0
    vivid = np.zeros((8, 8, 3), np.uint8)
    vivid[:4, :, 0] = 255
    vivid[4:, :, 2] = 255
    dull = (0.3 * vivid + 0.7 * 128).astype(np.uint8)
    assert colourfulness(vivid) > colourfulness(dull) > 0
