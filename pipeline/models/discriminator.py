"""The modified AC-GAN discriminator of Style2paints V1.

It has no real/fake head: it maps a colour image to a 4096-d vector of logits
(one per VGG19 fc1 unit). The losses (`pipeline/losses.py`) apply the sigmoid
and compare it with norm(V(y)) for real images and with zeros for generated ones.

Layout: `disc_depth` stride-2 4×4 convs (widths min(disc_width·2^i, max_width)),
LeakyReLU(0.2), the generator's normalisation kind from the second conv on (none
on the first, as in DCGAN/pix2pix: it would normalise raw pixel statistics),
one 3×3 conv, global average pooling, and a Linear to `style_dim` logits. The
average pooling makes any input size work and keeps the head small.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.config import ModelConfig
from pipeline.models.generator import act, norm_layer


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = [min(cfg.disc_width * 2**i, cfg.max_width) for i in range(cfg.disc_depth)]
        layers: list[nn.Module] = [nn.Conv2d(3, w[0], 4, stride=2, padding=1), act()]
        for c_in, c_out in zip(w[:-1], w[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                       norm_layer(cfg.norm, c_out), act()]
        layers += [nn.Conv2d(w[-1], w[-1], 3, padding=1), norm_layer(cfg.norm, w[-1]), act()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(w[-1], cfg.style_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img [B,3,H,W] in [-1,1] -> logits [B,style_dim] (sigmoid in the losses)."""
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"discriminator input must be [B,3,H,W], got {tuple(img.shape)}")
        return self.head(self.features(img).mean(dim=(2, 3)))
