"""sketchKeras rebuilt in Keras 3 (TensorFlow backend), loading the released `mod.h5`.

The original repository ships only pre/post-processing; the network lives in
`mod.h5`, a Keras 2 full-model save. Its structure (as documented by ports that
converted the file, e.g. sketchKeras-pytorch's layer list) is a U-net on one
channel:

  encoder  conv3x3/1 32 | conv4x4/2 64, conv3x3/1 64 | 4x4/2 128, 3x3 128
           | 4x4/2 256, 3x3 256 | 4x4/2 512 (=d5) | 3x3/1 512 (=d6)
  decoder  concat(d5, d6) -> up x2 -> 4x4/1 512 -> 3x3/1 256
           concat(skip, up) -> up x2 -> 4x4 256 -> 3x3 128 -> ... down to 32
           concat(d1, u4) -> conv3x3/1 1, linear output
Every conv but the last is followed by BatchNormalization (epsilon 1e-3, the
Keras default) and ReLU; padding is Keras "same" (zero), up-sampling nearest.
18 convolutions, 17 batch norms, ~17.9M parameters, fully convolutional.

Layer names follow Keras 2's automatic names (conv2d_1, batch_normalization_1,
...) so name-based and order-based loading both work. `check_weights_file`
compares a file's layers with this model before anything is loaded and refuses a
mismatch in one line.

Extraction runs `build_inference`, the same function with fewer operations
(BatchNorm folded into the convolutions; each decoder up-sampling + 4x4
convolution as four sub-pixel convolutions on the low-resolution input, 275 instead
of 526 GMAC per 512 px image), equal to the Keras model to float32 rounding.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from pipeline.sketch import process  # noqa: E402

BN_EPSILON = 1e-3
# Layer classes a sketchKeras save may contain; anything else (a Lambda, a
# different activation layer) means the file is not the network built here.
KNOWN_CLASSES = {"InputLayer", "Conv2D", "BatchNormalization", "Activation",
                 "UpSampling2D", "Concatenate", "Merge"}


class WeightsMismatch(ValueError):
    """A weights file that is not sketchKeras as built here; message is one line."""


class _Names:
    """Keras 2 style automatic names: conv2d_1, conv2d_2, ..."""

    def __init__(self):
        self.counts: Counter = Counter()

    def __call__(self, kind: str) -> str:
        self.counts[kind] += 1
        return f"{kind}_{self.counts[kind]}"


def build_sketchkeras() -> keras.Model:
    """The sketchKeras network with untrained weights; input [N, H, W, 1], H and W
    multiples of 16 (512 in the original)."""
    name = _Names()

    def conv_bn_relu(x, filters, kernel, stride=1):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", name=name("conv2d"))(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=name("batch_normalization"))(x)
        return layers.Activation("relu", name=name("activation"))(x)

    inputs = keras.Input(shape=(None, None, 1), name="input_1")
    d1 = conv_bn_relu(inputs, 32, 3)
    d2 = conv_bn_relu(conv_bn_relu(d1, 64, 4, 2), 64, 3)
    d3 = conv_bn_relu(conv_bn_relu(d2, 128, 4, 2), 128, 3)
    d4 = conv_bn_relu(conv_bn_relu(d3, 256, 4, 2), 256, 3)
    d5 = conv_bn_relu(d4, 512, 4, 2)
    d6 = conv_bn_relu(d5, 512, 3)

    x = layers.Concatenate(axis=-1, name=name("concatenate"))([d5, d6])
    for skip, filters in ((d4, 512), (d3, 256), (d2, 128), (d1, 64)):
        x = layers.UpSampling2D(2, name=name("up_sampling2d"))(x)
        x = conv_bn_relu(x, filters, 4)
        x = conv_bn_relu(x, filters // 2, 3)
        # Skip first, then the decoder path: the order fixes the kernel's input
        # channel layout in mod.h5.
        x = layers.Concatenate(axis=-1, name=name("concatenate"))([skip, x])
    outputs = layers.Conv2D(1, 3, padding="same", name=name("conv2d"))(x)
    return keras.Model(inputs, outputs, name="sketchKeras")


def randomize(model: keras.Model, seed: int) -> keras.Model:
    """Seeded random weights (He-scaled kernels, perturbed BN statistics), so
    tests and benchmarks exercise every weight without the real file."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            fan_in = int(np.prod(layer.kernel.shape[:3]))
            layer.kernel.assign(rng.normal(0, np.sqrt(2.0 / fan_in), layer.kernel.shape).astype(np.float32))
            layer.bias.assign(rng.normal(0, 0.01, layer.bias.shape).astype(np.float32))
        elif isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.8, 1.2, n).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.05, n).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.05, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.8, 1.2, n).astype(np.float32))
    return model


def _weighted_layers(model: keras.Model) -> list[tuple[str, list[tuple[int, ...]]]]:
    return [(layer.name, [tuple(w.shape) for w in layer.trainable_weights + layer.non_trainable_weights])
            for layer in model.layers if layer.weights]


def _conv_signature(cfg: dict) -> tuple:
    def pair(v):
        return tuple(v) if isinstance(v, (list, tuple)) else (v, v)
    return (cfg.get("filters"), pair(cfg.get("kernel_size")), pair(cfg.get("strides", 1)),
            cfg.get("padding", "valid"), cfg.get("activation", "linear"))


def _config_layers(model_config: dict) -> list[dict]:
    config = model_config.get("config", {})
    return config.get("layers", []) if isinstance(config, dict) else []


def check_weights_file(path: str | Path, model: keras.Model | None = None) -> None:
    """Refuse (WeightsMismatch, one line) a file whose layers differ from sketchKeras.

    Compares, in order, every layer that has weights (count and shapes); when the
    file is a full-model save it also compares the convolutions' kernel, stride,
    padding and activation, the BatchNorm epsilon and the set of layer classes.
    """
    import h5py

    path = Path(path)
    model = model or build_sketchkeras()
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise WeightsMismatch(f"{path}: not a readable HDF5 weights file ({err})") from None
    with fh:
        group = fh["model_weights"] if "layer_names" not in fh.attrs and "model_weights" in fh else fh
        if "layer_names" not in group.attrs:
            raise WeightsMismatch(f"{path}: not a Keras HDF5 save (no layer_names attribute)")
        saved = []
        for raw in group.attrs["layer_names"]:
            lname = raw.decode() if isinstance(raw, bytes) else str(raw)
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in group[lname].attrs.get("weight_names", [])]
            if names:
                saved.append((lname, [tuple(group[lname][n].shape) for n in names]))
        model_config = fh.attrs.get("model_config")

    expected = _weighted_layers(model)
    if len(saved) != len(expected):
        raise WeightsMismatch(
            f"{path}: not sketchKeras weights: {len(saved)} layers with weights, expected {len(expected)}"
        )
    for k, ((sname, sshapes), (ename, eshapes)) in enumerate(zip(saved, expected)):
        if sshapes != eshapes:
            raise WeightsMismatch(
                f"{path}: not sketchKeras weights: layer #{k} ({sname}) has weight shapes "
                f"{sshapes}, expected {eshapes} ({ename})"
            )
    if model_config is not None:
        _check_model_config(path, model_config, model)


def _check_model_config(path: Path, raw, model: keras.Model) -> None:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    saved = _config_layers(json.loads(text))
    unknown = sorted({lay.get("class_name") for lay in saved} - KNOWN_CLASSES)
    if unknown:
        raise WeightsMismatch(f"{path}: layer classes {unknown} are not part of sketchKeras as built here")
    ours = [layer.get_config() for layer in model.layers if isinstance(layer, layers.Conv2D)]
    theirs = [lay["config"] for lay in saved if lay.get("class_name") == "Conv2D"]
    for k, (a, b) in enumerate(zip(theirs, ours)):
        if _conv_signature(a) != _conv_signature(b):
            raise WeightsMismatch(
                f"{path}: conv #{k} (filters, kernel, strides, padding, activation) is "
                f"{_conv_signature(a)}, expected {_conv_signature(b)}"
            )
    eps = {lay["config"].get("epsilon") for lay in saved if lay.get("class_name") == "BatchNormalization"}
    if eps - {BN_EPSILON}:
        raise WeightsMismatch(f"{path}: BatchNormalization epsilon {sorted(eps)}, expected {BN_EPSILON}")
    acts = {lay["config"].get("activation") for lay in saved if lay.get("class_name") == "Activation"}
    if acts - {"relu"}:
        raise WeightsMismatch(f"{path}: activations {sorted(acts)}, expected only relu")


def load_sketchkeras(path: str | Path) -> keras.Model:
    """Build the network and load `path` (the released mod.h5 or our own .h5 save)."""
    model = build_sketchkeras()
    check_weights_file(path, model)
    # Order-based loading: the check above has already matched every layer.
    model.load_weights(str(path))
    return model


def _folded(conv, bn=None) -> tuple[np.ndarray, np.ndarray]:
    """A convolution's kernel and bias with the inference-mode BatchNorm after it
    folded in (float64 arithmetic, rounded once to float32)."""
    kernel = conv.kernel.numpy().astype(np.float64)
    bias = conv.bias.numpy().astype(np.float64)
    if bn is not None:
        scale = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)
        kernel = kernel * scale
        bias = (bias - bn.moving_mean.numpy()) * scale + bn.beta.numpy()
    return kernel, bias


# Nearest x2 up-sampling then a 4x4 stride-1 "same" convolution (TF pads 1 before,
# 2 after): output row 2m reads input rows m-1, m, m, m+1 (taps w0, w1+w2, w3) and
# row 2m+1 reads m, m, m+1, m+1 (taps w0+w1, w2+w3). Rows of these matrices map the
# 4 kernel taps onto the low-resolution taps of each output parity.
_PHASE_TAPS = (np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], np.float64),
               np.array([[1, 1, 0, 0], [0, 0, 1, 1]], np.float64))


def _phase_kernels(kernel: np.ndarray) -> list[list[np.ndarray]]:
    """[4, 4, Cin, Cout] -> kernels[py][px] of 3 or 2 taps per axis, acting on the
    low-resolution input padded by one pixel (py, px: output row/column parity)."""
    return [[np.einsum("at,bs,tsio->abio", _PHASE_TAPS[py], _PHASE_TAPS[px], kernel).astype(np.float32)
             for px in (0, 1)] for py in (0, 1)]


def build_inference(model: keras.Model):
    """The same function as `model` at inference, with fewer operations:
    BatchNorm folded into the convolutions, and each decoder `UpSampling2D` +
    4x4 convolution computed on the low-resolution input as four sub-pixel
    convolutions (3x3, 3x2, 2x3, 2x2 taps: 25 multiply-adds per input pixel and
    channel pair instead of 64), interleaved afterwards. About 275 of the 526
    GMAC per 512 px image; equal to `model` up to float32 rounding.
    Returns a function [N, H, W, 1] float32 tensor -> [N, H, W, 1]."""
    import tensorflow as tf

    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    if len(convs) != 18 or len(bns) != 17:
        raise ValueError("not the sketchKeras network")
    folded = [_folded(c, b) for c, b in zip(convs, bns)] + [_folded(convs[-1])]
    plain = {i: (tf.constant(k.astype(np.float32)), tf.constant(b.astype(np.float32)))
             for i, (k, b) in enumerate(folded)}
    phases = {i: [[tf.constant(k) for k in row] for row in _phase_kernels(folded[i][0])]
              for i in (9, 11, 13, 15)}

    def conv(x, i, stride=1, relu=True):
        kernel, bias = plain[i]
        y = tf.nn.bias_add(tf.nn.conv2d(x, kernel, stride, "SAME"), bias)
        return tf.nn.relu(y) if relu else y

    def up_conv(x, i):
        xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        bias = plain[i][1]
        rows = []
        for py in (0, 1):
            cols = [tf.nn.conv2d(xp[:, py:, px:], phases[i][py][px], 1, "VALID") for px in (0, 1)]
            cols = [tf.nn.relu(tf.nn.bias_add(c, bias)) for c in cols]
            rows.append(tf.stack(cols, axis=3))  # [N, H, W, 2, C]
        y = tf.stack(rows, axis=2)  # [N, H, 2, W, 2, C]
        s = tf.shape(y)
        return tf.reshape(y, [s[0], 2 * s[1], 2 * s[3], s[5]])

    def forward(x):
        d1 = conv(x, 0)
        d2 = conv(conv(d1, 1, 2), 2)
        d3 = conv(conv(d2, 3, 2), 4)
        d4 = conv(conv(d3, 5, 2), 6)
        d5 = conv(d4, 7, 2)
        y = tf.concat([d5, conv(d5, 8)], axis=-1)
        for j, skip in enumerate((d4, d3, d2, d1)):
            y = tf.concat([skip, conv(up_conv(y, 9 + 2 * j), 10 + 2 * j)], axis=-1)
        return conv(y, 17, relu=False)

    return forward


class SketchKerasExtractor:
    """Batched sketchKeras: `batch_images` images x 3 channels per forward pass,
    through `build_inference` (same output as the Keras model to float32 rounding)."""

    method_used = "sketchkeras"

    def __init__(self, model: keras.Model, variant: str = "enhanced", batch_images: int = 8,
                 work_size: int = 512, weights: dict | None = None):
        if work_size % 16:
            raise ValueError(f"work_size={work_size} must be a multiple of 16 (4 stride-2 convs)")
        import tensorflow as tf

        self.model = model
        self.variant = variant
        self.batch_images = batch_images
        self.work_size = work_size
        self.weights = weights or {"weights": None}
        # Traced graphs free each activation once used: at 512 px peak memory is
        # ~0.3 GB per channel-image instead of ~1.2 GB for an eager call.
        spec = [tf.TensorSpec([None, work_size, work_size, 1], tf.float32)]
        self._call = tf.function(build_inference(model), input_signature=spec)
        self._call_model = tf.function(lambda x: model(x, training=False), input_signature=spec)

    def forward(self, planes: np.ndarray) -> np.ndarray:
        """[N, S, S] float32 high-pass planes -> [N, S, S] line strengths."""
        return self._call(np.ascontiguousarray(planes[..., None], dtype=np.float32)).numpy()[..., 0]

    def forward_model(self, planes: np.ndarray) -> np.ndarray:
        """`forward` through the Keras model itself, layer by layer as in mod.h5."""
        return self._call_model(np.ascontiguousarray(planes[..., None], dtype=np.float32)).numpy()[..., 0]

    def describe(self) -> dict:
        """What makes these sketches (metrics, shard fingerprints)."""
        return {"method_used": self.method_used, "variant": self.variant,
                "work_size": self.work_size, "inference": "bn_folded_subpixel", **self.weights}

    def line_maps(self, images: list[np.ndarray]) -> list[tuple[process.Prepared, np.ndarray]]:
        """Per image: its preparation and the [3, S, S] network output, batched."""
        result = []
        for start in range(0, len(images), self.batch_images):
            preps = [process.prepare(img, self.work_size) for img in images[start:start + self.batch_images]]
            out = self.forward(np.concatenate([p.planes for p in preps]))
            result += [(p, out[3 * i: 3 * i + 3]) for i, p in enumerate(preps)]
        return result

    def extract(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [process.finish(lines, prep, self.variant) for prep, lines in self.line_maps(images)]

    def extract_one_by_one(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The original procedure: one image at a time, its channels one pass each
        (`mod.predict(light_map, batch_size=1)` on the Keras model); for benchmarks
        and tests."""
        sketches = []
        for img in images:
            prep = process.prepare(img, self.work_size)
            lines = np.stack([self.forward_model(prep.planes[c: c + 1])[0] for c in range(3)])
            sketches.append(process.finish(lines, prep, self.variant))
        return sketches
