"""Each loss checked against values worked out by hand on tiny tensors."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.losses import discriminator_losses, generator_losses, greyscale, norm_style
from tests.conftest import tiny_config

LN3 = math.log(3.0)
# Logits whose sigmoids are exactly 1/2, 3/4, 1/2, 1/4.
LOGITS = torch.tensor([[0.0, LN3, 0.0, -LN3]])
PROBS = [0.5, 0.75, 0.5, 0.25]
STYLE = torch.tensor([[0.0, 1.0, 2.0, 4.0]])
MAX_NORMED = [0.0, 0.25, 0.5, 1.0]


def _cfg(**kw):
    return tiny_config(model=kw).model.model_copy(update={"style_dim": 4})


def _bce(t, p):
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def _images():
    out = torch.full((1, 3, 2, 2), 0.5)
    target = torch.ones(1, 3, 2, 2)
    grey = torch.zeros(1, 1, 2, 2)        # |0 - T(1)| = 1
    colour = torch.full((1, 3, 2, 2), -1.0)  # |-1 - 1| = 2
    return out, grey, colour, target


def test_greyscale_is_bt601_luma():
    rgb = torch.tensor([1.0, -1.0, 0.5]).view(1, 3, 1, 1)
    assert greyscale(rgb).item() == pytest.approx(0.299 - 0.587 + 0.057)
    assert greyscale(torch.ones(1, 3, 2, 2)).shape == (1, 1, 2, 2)


def test_norms():
    assert norm_style(STYLE, "max").tolist() == [MAX_NORMED]
    sat = norm_style(STYLE, "saturate", 2.0)[0].tolist()
    assert sat == pytest.approx([1 - math.exp(-v / 2) for v in (0, 1, 2, 4)])
    # max is scale free, saturate is not.
    assert torch.equal(norm_style(STYLE * 10, "max"), norm_style(STYLE, "max"))
    assert not torch.allclose(norm_style(STYLE * 10, "saturate"), norm_style(STYLE, "saturate"))
    assert norm_style(torch.zeros(1, 4), "max").tolist() == [[0.0] * 4]


def test_generator_log_likelihood():
    losses = generator_losses(*_images(), LOGITS, STYLE, _cfg())
    adv = sum(_bce(t, p) for t, p in zip(MAX_NORMED, PROBS)) / 4
    assert losses["l1"].item() == pytest.approx(0.5)
    assert losses["guide_grey"].item() == pytest.approx(1.0)
    assert losses["guide_colour"].item() == pytest.approx(2.0)
    assert losses["adversarial"].item() == pytest.approx(adv, rel=1e-5)
    assert losses["total"].item() == pytest.approx(0.5 + 0.3 * 1 + 0.9 * 2 + 0.01 * adv, rel=1e-6)


def test_generator_weights_come_from_params():
    cfg = _cfg(guide_grey_weight=0.0, guide_colour_weight=2.0, adversarial_weight=1.0,
               style_norm="saturate", style_norm_scale=2.0)
    losses = generator_losses(*_images(), LOGITS, STYLE, cfg)
    targets = [1 - math.exp(-v / 2) for v in (0, 1, 2, 4)]
    adv = sum(_bce(t, p) for t, p in zip(targets, PROBS)) / 4
    assert losses["total"].item() == pytest.approx(0.5 + 2.0 * 2 + adv, rel=1e-6)


def test_generator_least_squares_and_dcgan():
    ls = generator_losses(*_images(), LOGITS, STYLE, _cfg(adversarial="least_squares"))
    z = LOGITS[0].tolist()
    assert ls["adversarial"].item() == pytest.approx(
        sum((zi - t) ** 2 for zi, t in zip(z, MAX_NORMED)) / 4, rel=1e-6)
    dc = generator_losses(*_images(), LOGITS + 1.0, STYLE, _cfg(adversarial="dcgan"))
    # score = mean logit = 1 -> -log sigmoid(1)
    assert dc["adversarial"].item() == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-6)


def test_discriminator_losses():
    fake = -LOGITS  # sigmoids 1/2, 1/4, 1/2, 3/4
    ll = discriminator_losses(LOGITS, fake, STYLE, _cfg())
    real = sum(_bce(t, p) for t, p in zip(MAX_NORMED, PROBS)) / 4
    fake_v = sum(_bce(0.0, p) for p in (0.5, 0.25, 0.5, 0.75)) / 4
    assert ll["real"].item() == pytest.approx(real, rel=1e-5)
    assert ll["fake"].item() == pytest.approx(fake_v, rel=1e-5)
    assert ll["total"].item() == pytest.approx(real + fake_v, rel=1e-5)

    ls = discriminator_losses(LOGITS, fake, STYLE, _cfg(adversarial="least_squares"))
    z = LOGITS[0].tolist()
    assert ls["real"].item() == pytest.approx(
        sum((zi - t) ** 2 for zi, t in zip(z, MAX_NORMED)) / 4, rel=1e-6)
    assert ls["fake"].item() == pytest.approx(sum(zi ** 2 for zi in z) / 4, rel=1e-6)

    dc = discriminator_losses(LOGITS + 2.0, LOGITS - 1.0, STYLE, _cfg(adversarial="dcgan"))
    assert dc["real"].item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-6)
    assert dc["fake"].item() == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-6)


def test_adversarial_gradient_reaches_the_generator_output():
    out = torch.zeros(1, 3, 2, 2, requires_grad=True)
    _, grey, colour, target = _images()
    head = torch.nn.Linear(12, 4)
    losses = generator_losses(out, grey, colour, target, head(out.flatten(1)), STYLE,
                              _cfg(adversarial_weight=1.0))
    losses["adversarial"].backward()
    assert out.grad.abs().sum() > 0


def test_colour_balance_weighs_rare_colours_up_and_keeps_mean_one():
    from pipeline.losses import colour_balance

    target = torch.full((2, 3, 10, 10), 0.9)  # white background
    target[0, :, :1, :4] = -0.9                # 4 dark pixels: 4% of image 0
    target[1, :, :5, :] = torch.tensor([0.9, -0.9, -0.9]).view(3, 1, 1)  # half red
    w = colour_balance(target, 0.5)
    assert w.shape == (2, 1, 10, 10)
    torch.testing.assert_close(w.mean(dim=(2, 3)), torch.ones(2, 1))
    # weight ∝ share^-0.5: dark (0.04) vs white (0.96) in image 0
    ratio = float(w[0, 0, 0, 0] / w[0, 0, 9, 9])
    assert ratio == pytest.approx((0.96 / 0.04) ** 0.5, rel=1e-5)
    assert torch.allclose(w[1], torch.ones_like(w[1]))  # two colours of equal area


def test_l1_balance_zero_is_the_plain_mean():
    torch.manual_seed(0)
    out, target = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    grey, colour = torch.rand(2, 1, 8, 8), torch.rand(2, 3, 8, 8)
    fake, style = torch.zeros(2, 4), torch.rand(2, 4)
    plain = generator_losses(out, grey, colour, target, fake, style, _cfg(l1_balance=0.0))
    assert plain["l1"] == pytest.approx(float((out - target).abs().mean()))
    balanced = generator_losses(out, grey, colour, target, fake, style, _cfg(l1_balance=0.5))
    assert float(balanced["l1"]) != pytest.approx(float(plain["l1"]))
