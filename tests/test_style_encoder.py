"""The frozen VGG19 style encoder: weights loading, seeded fallback, frozen under training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from pipeline.losses import generator_losses
from pipeline.models import build_discriminator, build_generator
from pipeline.style_encoder import HUB_FILENAME, StyleEncoder
from tests.conftest import tiny_config

SIZE = 32


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """Tests never see the machine's real torch hub cache."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A torchvision VGG19 state_dict from seed 7, saved the way torchvision ships it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        vgg = torchvision.models.vgg19(weights=None).eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg19-local.pth"
    torch.save(vgg.state_dict(), path)
    yield path, vgg
    path.unlink()  # 550 MB: pytest keeps the last runs' temp folders


@pytest.fixture(scope="module")
def random_encoder():
    return StyleEncoder("/nonexistent/vgg19.pth", SIZE, seed=1)


def _images(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)


def _reference_fc1(vgg, images: np.ndarray) -> torch.Tensor:
    """fc1 before its ReLU (the paper's code) computed directly on the torchvision model."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear",
                                        align_corners=False, antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        h = torch.flatten(vgg.avgpool(vgg.features((x - mean) / std)), 1)
        return vgg.classifier[0](h)


def test_local_weights_file_is_loaded(vgg_file):
    path, vgg = vgg_file
    enc = StyleEncoder(str(path), SIZE, seed=0)
    assert enc.source == "imagenet" and enc.weights_path == str(path)
    images = _images()
    codes = enc.encode(images)
    assert codes.shape == (3, 4096) and codes.dtype == torch.float32
    torch.testing.assert_close(codes, _reference_fc1(vgg, images), rtol=1e-4, atol=1e-5)
    # The same code from the float [0,1] NCHW form.
    as_float = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(enc.encode(as_float), codes)


def test_hub_cache_location_is_the_default(vgg_file, empty_hub):
    path, _ = vgg_file
    (empty_hub / "checkpoints").mkdir(parents=True)
    (empty_hub / "checkpoints" / HUB_FILENAME).symlink_to(path)
    enc = StyleEncoder(None, SIZE)
    assert enc.source == "imagenet"
    assert enc.weights_path == str(empty_hub / "checkpoints" / HUB_FILENAME)


def test_random_fallback_is_seeded_logged_and_leaves_global_rng(tmp_path, caplog,
                                                                random_encoder):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    with caplog.at_level("WARNING"):
        a = StyleEncoder(str(tmp_path / "absent.pth"), SIZE, seed=1)
    assert torch.equal(torch.rand(1), expected_next)  # caller's RNG stream untouched
    assert a.source == "random" and a.weights_path is None
    lines = [r for r in caplog.records if "seeded random weights" in r.getMessage()]
    assert len(lines) == 1 and "absent.pth" in lines[0].getMessage()
    images = _images(2)
    codes = a.encode(images)
    assert (codes < 0).any() and codes.max() > 0  # fc1 before its ReLU
    assert torch.equal(random_encoder.encode(images), codes)
    assert not torch.equal(StyleEncoder(None, SIZE, seed=2).encode(images), codes)


def test_unreadable_weights_file_is_an_error(tmp_path):
    bad = tmp_path / "vgg19.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="vgg19.pth: cannot read VGG19 weights"):
        StyleEncoder(str(bad), SIZE)
    wrong = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="other.pth: not a torchvision VGG19 state_dict"):
        StyleEncoder(str(wrong), SIZE)


def test_vgg_stays_frozen_through_a_generator_step(random_encoder):
    torch.manual_seed(0)
    enc = random_encoder
    enc.train()  # asking for train mode must not unfreeze it
    assert not enc.training
    assert all(not p.requires_grad for p in enc.parameters())
    before = {k: v.clone() for k, v in enc.state_dict().items()}

    cfg = tiny_config().model
    G, D = build_generator(cfg).train(), build_discriminator(cfg)
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    style = enc.encode((target + 1) / 2)
    assert not style.requires_grad
    out, grey, colour = G(torch.rand(2, 1, 16, 16) * 2 - 1, style)
    # Style of the generated image through V as well: gradient must stop at V's input.
    style_fake = enc((out + 1) / 2)
    loss = generator_losses(out, grey, colour, target, D(out), style, cfg)["total"]
    loss = loss + style_fake.mean()
    g_before = [p.clone() for p in G.parameters()]
    opt = torch.optim.Adam(list(G.parameters()) + list(enc.parameters()), lr=1e-2)
    loss.backward()
    opt.step()

    assert all(p.grad is None for p in enc.parameters())
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(g_before, G.parameters()))


def test_bf16_precision_is_close_to_fp32(random_encoder):
    images = _images(2)
    fp32 = random_encoder.encode(images)
    random_encoder.precision = "bf16"
    try:
        bf16 = random_encoder.encode(images)
    finally:
        random_encoder.precision = "fp32"
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert (bf16 - fp32).abs().mean() < 0.03 * fp32.abs().mean()
    with pytest.raises(ValueError, match="precision"):
        StyleEncoder(None, SIZE, precision="fp16")


def test_code_variants_against_torchvision(vgg_file):
    """fc1_relu = ReLU(fc1); pooled = per-channel mean and std of relu1_2, relu2_2,
    relu3_4, relu4_4 and relu5_4, computed here directly on the torchvision model."""
    from pipeline.style_encoder import CODE_DIMS, POOLED_CHANNELS, POOLED_LAYERS

    path, vgg = vgg_file
    images = _images()
    fc1 = _reference_fc1(vgg, images)
    relu = StyleEncoder(str(path), SIZE, code="fc1_relu").encode(images)
    torch.testing.assert_close(relu, fc1.clamp_min(0), rtol=1e-4, atol=1e-5)

    pooled = StyleEncoder(str(path), SIZE, code="pooled")
    assert pooled.fc1 is None and CODE_DIMS["pooled"] == 2 * sum(POOLED_CHANNELS)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear",
                                        align_corners=False, antialias=True)
    h = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    means, stds, thirds = [], [], []
    with torch.no_grad():
        for i, layer in enumerate(vgg.features):
            h = layer(h)
            if i in POOLED_LAYERS:
                means.append(h.mean((2, 3)))
                stds.append(h.std((2, 3), correction=0))
                thirds.append(torch.nn.functional.adaptive_avg_pool2d(h, (3, 1)).flatten(1))
    expected = torch.cat(means + stds, 1)
    got = pooled.encode(images)
    assert got.shape == (3, CODE_DIMS["pooled"])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)

    # bands: the means of the top, middle and bottom third of the same layers.
    bands = StyleEncoder(str(path), SIZE, code="bands").encode(images)
    assert bands.shape == (3, CODE_DIMS["bands"]) == (3, 3 * sum(POOLED_CHANNELS))
    torch.testing.assert_close(bands, torch.cat(thirds, 1), rtol=1e-4, atol=1e-4)


def test_unknown_code_is_refused():
    with pytest.raises(ValueError, match="code must be one of"):
        StyleEncoder(None, SIZE, code="fc2")
