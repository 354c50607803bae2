"""Style2paints V1 losses: the guided L1 of the generator and the modified AC-GAN.

Generator (paper eq. 1 plus the adversarial term):
    total = |y - G|_1 + a·|T(y) - G1|_1 + b·|y - G2|_1 + λ·adversarial
with a = model.guide_grey_weight (0.3), b = model.guide_colour_weight (0.9),
λ = model.adversarial_weight (0.01). T is the ITU-R BT.601 luma (0.299 R +
0.587 G + 0.114 B), which maps [-1,1] RGB to [-1,1] grey.

Every L1 is a mean over pixels, weighted by colour rarity when
`model.l1_balance` = p > 0 (ours; p = 0 is the paper's plain mean): a pixel
weighs (share of the target's pixels with its colour)^-p, colours quantised to
8 levels per channel, weights normalised to mean 1 per image. A plain mean lets
the background (about 65% of a toon at 64 px) drown the eyes (1%) and hair (6%):
the generator then learns the background's colour from the reference long before
the small parts'. With p = 0.5 the oracle-palette check reached, after 400 CPU
steps, the swap projections plain L1 reached after 1600 (README, conditioning
check). It needs no part masks, so real illustrations get it as well.

The discriminator outputs 4096 logits, one per VGG19 fc1 unit. `model.adversarial`:

- log_likelihood (paper, default): element-wise binary cross-entropy over the
  4096 entries. D: real → norm(V(y)), fake → 0. G: D(G) → norm(V(y)).
- least_squares: the same targets with squared error on the raw logits, used
  linearly as LSGAN does (a sigmoid before the square would bring back the
  vanishing gradient that LSGAN exists to remove).
- dcgan: a plain real/fake GAN; the score of an image is the mean of its 4096
  logits. D: BCE(score_real, 1) + BCE(score_fake, 0); G: BCE(score_fake, 1)
  (the non-saturating form). It ignores V(y).

norm() maps the non-negative fc1 activations into [0, 1] (`model.style_norm`):
- max (default): v / max(v) per image. It is scale free, so it gives the same
  targets whatever the encoder's activation scale (ImageNet weights and the
  seeded random fallback differ by an order of magnitude), always uses the whole
  [0, 1] range, and keeps the vector's shape (which units fire, relatively).
- saturate: 1 - exp(-v / model.style_norm_scale); keeps absolute magnitudes, but
  the scale has to be tuned to the encoder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.config import ModelConfig

LUMA = (0.299, 0.587, 0.114)


def greyscale(rgb: torch.Tensor) -> torch.Tensor:
    """T(y): [B,3,H,W] -> [B,1,H,W], same value range."""
    w = rgb.new_tensor(LUMA).view(1, 3, 1, 1)
    return (rgb * w).sum(dim=1, keepdim=True)


BALANCE_LEVELS = 8  # quantisation levels per channel for colour rarity


def colour_balance(target: torch.Tensor, power: float) -> torch.Tensor:
    """[B,1,H,W] weights, mean 1 per image: (share of the image's pixels whose
    quantised colour equals this pixel's) ** -power. `target` [B,3,H,W] in [-1,1]."""
    b, _, h, w = target.shape
    levels = BALANCE_LEVELS
    q = ((target.detach().float() + 1) * (levels / 2)).long().clamp(0, levels - 1)
    bins = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]
    bins = bins + levels**3 * torch.arange(b, device=bins.device).view(b, 1, 1)
    counts = torch.bincount(bins.flatten(), minlength=b * levels**3).float()
    share = counts[bins].unsqueeze(1) / (h * w)
    weights = share.pow(-power)
    return weights / weights.mean(dim=(2, 3), keepdim=True)


def _l1(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    err = (pred.float() - target).abs()
    return err.mean() if weights is None else (err * weights).mean()


def norm_style(v: torch.Tensor, kind: str = "max", scale: float = 1.0) -> torch.Tensor:
    """Map non-negative style codes [B,D] into [0, 1] (see the module docstring)."""
    v = v.float().clamp_min(0)
    if kind == "max":
        return v / v.amax(dim=-1, keepdim=True).clamp_min(1e-8)
    if kind == "saturate":
        return 1.0 - torch.exp(-v / scale)
    raise ValueError(f"unknown style norm {kind!r} (max | saturate)")


def _adv_to_target(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "log_likelihood":
        return F.binary_cross_entropy_with_logits(logits, target)
    if kind == "least_squares":
        return F.mse_loss(logits, target)
    raise ValueError(f"unknown adversarial loss {kind!r}")


def _dcgan_score(logits: torch.Tensor) -> torch.Tensor:
    return logits.mean(dim=-1)


def generator_losses(out, guide_grey, guide_colour, target, d_fake_logits, style_target,
                     model_cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Loss terms of G; `target` [B,3,H,W] in [-1,1], `style_target` raw V(y) [B,4096].

    `d_fake_logits` = D(out) with gradient flowing back into G. Returns
    l1, guide_grey, guide_colour, adversarial (unweighted) and total (weighted).
    """
    target = target.float()
    weights = (colour_balance(target, model_cfg.l1_balance) if model_cfg.l1_balance > 0
               else None)
    l1 = _l1(out, target, weights)
    g_grey = _l1(guide_grey, greyscale(target), weights)
    g_colour = _l1(guide_colour, target, weights)
    kind = model_cfg.adversarial
    logits = d_fake_logits.float()
    if kind == "dcgan":
        score = _dcgan_score(logits)
        adv = F.binary_cross_entropy_with_logits(score, torch.ones_like(score))
    else:
        wanted = norm_style(style_target, model_cfg.style_norm, model_cfg.style_norm_scale)
        adv = _adv_to_target(logits, wanted, kind)
    total = (l1 + model_cfg.guide_grey_weight * g_grey
             + model_cfg.guide_colour_weight * g_colour
             + model_cfg.adversarial_weight * adv)
    return {"l1": l1, "guide_grey": g_grey, "guide_colour": g_colour,
            "adversarial": adv, "total": total}


def discriminator_losses(d_real_logits, d_fake_logits, style_target,
                         model_cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Loss terms of D; pass D(out.detach()) as `d_fake_logits`. total = real + fake."""
    real_logits, fake_logits = d_real_logits.float(), d_fake_logits.float()
    kind = model_cfg.adversarial
    if kind == "dcgan":
        s_real, s_fake = _dcgan_score(real_logits), _dcgan_score(fake_logits)
        real = F.binary_cross_entropy_with_logits(s_real, torch.ones_like(s_real))
        fake = F.binary_cross_entropy_with_logits(s_fake, torch.zeros_like(s_fake))
    else:
        wanted = norm_style(style_target, model_cfg.style_norm, model_cfg.style_norm_scale)
        real = _adv_to_target(real_logits, wanted, kind)
        fake = _adv_to_target(fake_logits, torch.zeros_like(fake_logits), kind)
    return {"real": real, "fake": fake, "total": real + fake}
