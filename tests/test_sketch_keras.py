"""sketchKeras in Keras 3: architecture, weights round trips, refusal of foreign
files, batched == one-by-one. One randomised model per module; the network is
fully convolutional, so tests run at a 32 px working size through the same path."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import tiny_config

sk = pytest.importorskip("pipeline.sketch.sketchkeras")
from keras import layers  # noqa: E402

from pipeline.config import ConfigError  # noqa: E402
from pipeline.sketch import make_extractor  # noqa: E402

WORK = 32
# Keras's own HDF5 writer trips numpy 2's __array__(copy=) deprecation; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# The mod.h5 convolutions as documented by the public ports (kernel h, w, in, out),
# written out independently of the builder.
DOCUMENTED_CONVS = [
    (3, 3, 1, 32), (4, 4, 32, 64), (3, 3, 64, 64), (4, 4, 64, 128), (3, 3, 128, 128),
    (4, 4, 128, 256), (3, 3, 256, 256), (4, 4, 256, 512), (3, 3, 512, 512),
    (4, 4, 1024, 512), (3, 3, 512, 256), (4, 4, 512, 256), (3, 3, 256, 128),
    (4, 4, 256, 128), (3, 3, 128, 64), (4, 4, 128, 64), (3, 3, 64, 32), (3, 3, 64, 1),
]


@pytest.fixture(scope="module")
def model():
    return sk.randomize(sk.build_sketchkeras(), seed=0)


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "sketchkeras.h5"
    model.save(str(path))  # legacy HDF5 full-model save, like mod.h5
    return path


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    out = []
    for h, w in ((30, 24), (20, 40), (33, 33)):
        img = np.full((h, w, 3), rng.integers(120, 255, 3), np.uint8)
        img[h // 4: h // 2, w // 5: w // 2] = rng.integers(0, 120, 3)  # a dark block
        out.append(img)
    return out


def _lines(model, planes):
    return model(planes[..., None], training=False).numpy()[..., 0]


def test_architecture_matches_the_documented_layer_list(model):
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    assert [tuple(c.kernel.shape) for c in convs] == DOCUMENTED_CONVS
    strides = [c.strides[0] for c in convs]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 2] + [1] * 10
    assert all(c.padding == "same" for c in convs) and convs[-1].get_config()["activation"] == "linear"
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    assert len(bns) == 17 and {b.epsilon for b in bns} == {1e-3}
    ups = [layer for layer in model.layers if isinstance(layer, layers.UpSampling2D)]
    assert len(ups) == 4 and {u.interpolation for u in ups} == {"nearest"}
    assert [layer.name for layer in model.layers[:4]] == ["input_1", "conv2d_1", "batch_normalization_1",
                                                        "activation_1"]
    out = model(np.zeros((2, WORK, WORK, 1), np.float32))
    assert tuple(out.shape) == (2, WORK, WORK, 1)


def test_h5_round_trip_gives_identical_outputs(model, saved):
    fresh = sk.load_sketchkeras(saved)
    planes = np.random.default_rng(0).normal(size=(3, WORK, WORK)).astype(np.float32)
    np.testing.assert_array_equal(_lines(fresh, planes), _lines(model, planes))


def _write_keras2_layout(model, path, values=True, shapes=None, extra_layers=()):
    """The layout of a Keras 2.0 full-model save (what mod.h5 is): nested groups
    `conv2d_1/conv2d_1/kernel:0`, a `Model` config, keras_version 2.x.
    values=False writes shapes only (the check never reads values): tiny and fast.
    `shapes` overrides weight shapes by weight name; `extra_layers` adds config entries."""
    cfg_layers = []
    for layer in model.layers:
        c = {"name": layer.name}
        if isinstance(layer, layers.Conv2D):
            c.update(filters=layer.filters, kernel_size=list(layer.kernel_size),
                     strides=list(layer.strides), padding=layer.padding, activation="linear")
        elif isinstance(layer, layers.BatchNormalization):
            c.update(epsilon=layer.epsilon, momentum=0.99)
        elif isinstance(layer, layers.Activation):
            c.update(activation="relu")
        cfg_layers.append({"class_name": type(layer).__name__, "name": layer.name, "config": c})
    cfg_layers[2:2] = list(extra_layers)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.0.8"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(
            {"class_name": "Model", "config": {"name": "model_1", "layers": cfg_layers}}).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            group = g.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{w.name}:0" for w in weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, weights):
                if values:
                    group.create_dataset(n, data=w.numpy())
                else:
                    group.create_dataset(n, (shapes or {}).get(n, tuple(w.shape)), "float32")


def test_loads_a_keras2_layout_save(model, tmp_path):
    path = tmp_path / "mod.h5"
    _write_keras2_layout(model, path)
    fresh = sk.load_sketchkeras(path)
    planes = np.random.default_rng(1).normal(size=(3, WORK, WORK)).astype(np.float32)
    np.testing.assert_array_equal(_lines(fresh, planes), _lines(model, planes))


def test_refuses_a_file_with_other_shapes(model, tmp_path):
    good = tmp_path / "good.h5"
    _write_keras2_layout(model, good, values=False)
    sk.check_weights_file(good, model)  # the shape-only layout itself passes
    bad = tmp_path / "bad.h5"
    _write_keras2_layout(model, bad, values=False, shapes={"conv2d_5/kernel:0": (3, 3, 128, 96)})
    with pytest.raises(sk.WeightsMismatch) as err:
        sk.load_sketchkeras(bad)
    msg = str(err.value)
    assert "\n" not in msg and "bad.h5" in msg and "conv2d_5" in msg and "(3, 3, 128, 96)" in msg


def test_refuses_foreign_layers_and_non_hdf5(model, tmp_path):
    lam = tmp_path / "lambda.h5"
    _write_keras2_layout(model, lam, values=False,
                         extra_layers=[{"class_name": "Lambda", "name": "pad", "config": {}}])
    with pytest.raises(sk.WeightsMismatch, match=r"\['Lambda'\]"):
        sk.check_weights_file(lam, model)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"<html>download page</html>")
    with pytest.raises(sk.WeightsMismatch, match="not a readable HDF5"):
        sk.check_weights_file(junk, model)
    cfg = tiny_config(tmp_path, extract={"method": "auto", "weights": str(junk)})
    with pytest.raises(ConfigError, match="junk.h5"):
        make_extractor(cfg.extract)  # a present but wrong file is an error, not a fallback


def test_batched_equals_one_by_one(model, images):
    ex = sk.SketchKerasExtractor(model, "raw", batch_images=2, work_size=WORK)
    batched = ex.line_maps(images)
    single = [np.stack([_lines(model, p.planes[c: c + 1])[0] for c in range(3)])
              for p, _ in batched]
    for (_, b), s in zip(batched, single):
        np.testing.assert_allclose(b, s, atol=1e-4)
    for a, b in zip(ex.extract(images), ex.extract_one_by_one(images)):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1
    assert [s.shape for s in ex.extract(images)] == [img.shape[:2] for img in images]


def test_inference_graph_equals_the_keras_model(model):
    """BatchNorm folding and the sub-pixel decoder convolutions change only float32
    rounding; 48 px gives odd low-resolution sizes (3, 6, 12, 24) at the borders."""
    forward = sk.build_inference(model)
    planes = np.random.default_rng(2).normal(size=(2, 48, 48, 1)).astype(np.float32)
    ref = model(planes, training=False).numpy()
    np.testing.assert_allclose(forward(planes).numpy(), ref, atol=1e-4)
    assert np.abs(ref).max() > 1  # not trivially small outputs


def test_auto_uses_sketchkeras_when_weights_exist(saved, tmp_path):
    cfg = tiny_config(tmp_path, extract={"method": "auto", "weights": str(saved), "work_size": WORK,
                                         "variant": "pured"})
    ex = make_extractor(cfg.extract)
    assert ex.method_used == "sketchkeras"
    info = ex.describe()
    assert info["weights"] == str(saved) and len(info["weights_sha256"]) == 64
    assert (info["variant"], info["work_size"]) == ("pured", WORK)
