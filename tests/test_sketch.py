"""Sketch pre/post-processing against the original's steps, the classical
extractors and method selection. No TensorFlow here (see test_sketch_keras.py)."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from conftest import require_samples, tiny_config

from pipeline.config import ConfigError
from pipeline.sketch import agreement, classical, make_extractor, process, resolve_method

# ---- a direct transcription of lllyasviel/sketchKeras main.py + helper.py -------------
# (np.float -> float; cv2.imshow/imwrite dropped). Kept literal on purpose: the
# pipeline's vectorised version must give the same numbers.


def _orig_get_light_map_single(img):
    gray = img
    gray = gray[None]
    gray = gray.transpose((1, 2, 0))
    blur = cv2.GaussianBlur(gray, (0, 0), 3)
    gray = gray.reshape((gray.shape[0], gray.shape[1]))
    high_pass = gray.astype(int) - blur.astype(int)
    high_pass = high_pass.astype(float)
    return high_pass / 128.0


def _orig_resize_img_512_3d(img):
    zeros = np.zeros((1, 3, 512, 512), dtype=float)
    zeros[0, 0: img.shape[0], 0: img.shape[1], 0: img.shape[2]] = img
    return zeros.transpose((1, 2, 3, 0))


def _orig_prepare(from_mat):
    width = float(from_mat.shape[1])
    height = float(from_mat.shape[0])
    if width > height:
        from_mat = cv2.resize(from_mat, (512, int(512 / width * height)), interpolation=cv2.INTER_AREA)
        new_width, new_height = 512, int(512 / width * height)
    else:
        from_mat = cv2.resize(from_mat, (int(512 / height * width), 512), interpolation=cv2.INTER_AREA)
        new_width, new_height = int(512 / height * width), 512
    from_mat = from_mat.transpose((2, 0, 1))
    light_map = np.zeros(from_mat.shape, dtype=float)
    for channel in range(3):
        light_map[channel] = _orig_get_light_map_single(from_mat[channel])
    light_map = light_map / np.max(light_map)
    return _orig_resize_img_512_3d(light_map), new_height, new_width


def _orig_post(line_mat, new_height, new_width, threshold):
    line_mat = line_mat.transpose((3, 1, 2, 0))[0]
    line_mat = line_mat[0:int(new_height), 0:int(new_width), :]
    mat = np.amax(line_mat, 2).astype(float)
    if threshold is not None:
        mat[mat < threshold] = 0
    mat = -mat + 1
    mat = mat * 255.0
    mat[mat < 0] = 0
    mat[mat > 255] = 255
    return mat.astype(np.uint8)


def _real_colour_image():
    samples = require_samples()
    bgr = cv2.imread(str(samples / "color" / "s2p_test_15.jpg"), cv2.IMREAD_COLOR)
    assert bgr is not None
    return bgr


def test_preprocessing_equals_the_original_steps():
    bgr = _real_colour_image()  # cv2 order, as the original reads it
    expected, h, w = _orig_prepare(bgr)
    prep = process.prepare(bgr, 512)
    assert (prep.height, prep.width) == (h, w) and max(h, w) == 512
    assert (prep.orig_height, prep.orig_width) == bgr.shape[:2]
    assert prep.planes.shape == (3, 512, 512)
    np.testing.assert_allclose(prep.planes, expected[..., 0], rtol=0, atol=1e-6)
    # RGB instead of BGR gives the same planes, permuted: the network sees the
    # three channels as independent images, so the sketch is order-free.
    rgb_prep = process.prepare(bgr[..., ::-1].copy(), 512)
    np.testing.assert_allclose(rgb_prep.planes[::-1], prep.planes, atol=1e-6)


@pytest.mark.parametrize("variant,threshold", [("raw", None), ("enhanced", 0.1), ("pured", 0.18)])
def test_postprocessing_equals_the_original(variant, threshold):
    rng = np.random.default_rng(1)
    h, w = 300, 512
    net_out = rng.uniform(-0.3, 1.3, size=(3, 512, 512, 1))
    prep = process.Prepared(None, h, w, h, w)
    got = process.finish(net_out[..., 0], prep, variant)
    want = _orig_post(net_out, h, w, threshold)
    # float32 vs float64: truncation to uint8 may differ by one grey level at
    # values that land exactly on an integer.
    assert got.shape == want.shape == (h, w)
    assert np.abs(got.astype(int) - want).max() <= 1
    assert (got != want).mean() < 1e-3


def test_resize_back_to_the_input_size():
    line = np.zeros((3, 64, 64), np.float32)
    line[:, 10:12, :] = 1.0  # a horizontal line
    prep = process.Prepared(None, 64, 48, 128, 96)
    out = process.finish(line, prep, "raw")
    assert out.shape == (128, 96) and out.dtype == np.uint8
    assert out[20:24].mean() < 60 and out[60:].min() == 255


def test_flat_image_gives_blank_paper_not_nans():
    flat = np.full((40, 30, 3), 120, np.uint8)
    prep = process.prepare(flat, 64)
    assert np.isfinite(prep.planes).all() and not prep.planes.any()
    sk = classical.ClassicalExtractor("highpass", "enhanced", 64).extract([flat])[0]
    assert sk.shape == (40, 30) and sk.min() == 255


@pytest.mark.parametrize("name", classical.VARIANTS)
def test_classical_draws_dark_outlines_on_white(name):
    img = np.full((96, 128, 3), (250, 220, 200), np.uint8)
    cv2.circle(img, (64, 48), 30, (200, 60, 60), -1)
    cv2.circle(img, (64, 48), 30, (10, 10, 10), 2)
    sk = classical.ClassicalExtractor(name, "enhanced", 256).extract([img])[0]
    assert sk.shape == (96, 128) and sk.dtype == np.uint8
    ring = np.zeros((96, 128), np.uint8)
    cv2.circle(ring, (64, 48), 30, 1, 2)
    assert sk[ring > 0].mean() < 200          # the outline is drawn
    assert np.median(sk[:, :20]) == 255      # flat paper stays white


def test_classical_agrees_with_real_sketchkeras_above_floor():
    samples = require_samples()
    pairs = agreement.load_pairs(samples / "sketchkeras_pairs")
    assert len(pairs) == 2
    ex = classical.ClassicalExtractor(classical.DEFAULT_VARIANT, "raw", 512)
    scores = [(agreement.pearson(ex.extract([rgb])[0], ref), agreement.line_f1(ex.extract([rgb])[0], ref))
              for _, rgb, ref in pairs]
    # Measured 0.84/0.72 (Pearson) and 0.78/0.61 (F1); loose floors, not pins.
    assert min(p for p, _ in scores) > 0.6
    assert min(f for _, f in scores) > 0.5


def test_agreement_metrics_behave():
    ref = np.full((50, 60), 255, np.uint8)
    ref[20:23, 5:55] = 0
    assert agreement.pearson(ref, ref) == pytest.approx(1.0)
    assert agreement.line_f1(ref, ref) == 1.0
    shifted = np.roll(ref, 10, axis=0)
    assert agreement.line_f1(shifted, ref) == 0.0
    assert agreement.pearson(shifted, ref) < 0.1


def test_auto_falls_back_to_classical_with_one_line(tmp_path, caplog):
    cfg = tiny_config(tmp_path, extract={"method": "auto", "weights": str(tmp_path / "nope.h5")})
    with caplog.at_level(logging.WARNING, logger="s2p.sketch"):
        ex = make_extractor(cfg.extract)
    assert ex.method_used == "classical"
    assert ex.describe()["classical"] == cfg.extract.classical
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "nope.h5 not found" in lines[0] and "classical" in lines[0]


def test_sketchkeras_without_weights_is_a_config_error(tmp_path):
    cfg = tiny_config(tmp_path, extract={"method": "sketchkeras", "weights": str(tmp_path / "mod.h5")})
    with pytest.raises(ConfigError, match=r"extract.weights: .*mod.h5 not found") as err:
        resolve_method(cfg.extract)
    assert "\n" not in str(err.value)
    cfg = tiny_config(tmp_path, extract={"method": "sketchkeras", "weights": None})
    with pytest.raises(ConfigError):
        make_extractor(cfg.extract)


def test_classical_method_ignores_present_weights(tmp_path):
    weights = tmp_path / "mod.h5"
    weights.write_bytes(b"not even hdf5")
    cfg = tiny_config(tmp_path, extract={"method": "classical", "weights": str(weights)})
    assert resolve_method(cfg.extract) == "classical"
    cfg = tiny_config(tmp_path, extract={"method": "auto", "weights": str(weights)})
    assert resolve_method(cfg.extract) == "sketchkeras"
