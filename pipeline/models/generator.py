"""The Style2paints V1 generator: an enhanced residual U-net with two guide decoders.

Read top to bottom, `Generator.forward` is the paper's architecture figure (arXiv:1706.03319):

    sketch x ─ stem ─ encoder level 1 … depth ──► middle entry ──► guide decoder 1 → T(y) (grey)
                │            │                        │
                │ skips      │                 fusion with V(y): Linear → tile → concat → 1×1 conv
                │            │                        │
                │            │                   middle blocks ──► middle exit ──► guide decoder 2 → y (colour)
                │            │                        │
                └────────────┴──── decoder level depth … 1 (U-net skips) ──► to_rgb → G(x, V(y))

Choices the paper leaves open, made here (all sizes come from `ModelConfig`):

- Widths: level i has min(base_width·2^i, max_width) channels; `depth` stride-2
  downsamplings, so H and W must be multiples of 2^depth. CPU default: depth 3,
  base 16, max 256 (1.8 M parameters, 1.6 M without the guide decoders). Paper
  scale (256² input, 4×4 bottleneck): depth 6, base_width 64, max_width 512,
  res_blocks 1, middle_blocks 2, style_proj 512, disc_width 64, disc_depth 5
  (92 M, 75 M without the guides; `benchmarks/model.py` prints parameters and
  FLOPs of both).
- Residual blocks are pre-activation (norm → act → conv, twice, plus identity;
  He et al. 2016), so every level has a clean identity path for the gradient
  (the paper's cure for the lazy middle, together with the guide decoders).
- Activation: LeakyReLU(0.2) everywhere: no dead units, so the middle keeps
  receiving gradient even early in training.
- Normalisation (`model.norm`): GroupNorm by default. It does not depend on the
  batch (batches of 4-16 per GPU are normal here), needs no SyncBatchNorm under
  DDP and behaves the same in train() and eval(). `batch` is offered for
  comparison (convert with SyncBatchNorm for DDP), `none` for ablations.
- Style fusion (Iizuka et al. 2016 global-feature fusion): the raw 4096-d V(y) is
  projected by a Linear to `style_proj` channels, tiled over the middle map,
  concatenated with it and mixed by a 1×1 conv followed by an activation and *no*
  normalisation: a norm straight after the fusion would subtract the per-sample
  mean that the tiled (spatially constant) style contribution lives in.
- Upsampling: nearest ×2 then a 3×3 conv (no transposed convs, no checkerboard).
- Guide decoders: plain decoders without skips (upsample + conv + norm + act per
  level, up to full resolution, then a 3×3 conv and tanh). Having no skips, they
  can only succeed through the middle's features, which is the point.
- `forward` returns (out, guide_grey, guide_colour) in train() and only `out` in
  eval(); inference never runs the guide decoders.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.config import ModelConfig


def widths(cfg: ModelConfig) -> list[int]:
    """Channel width of each U-net level, 0 (full resolution) to depth (middle)."""
    return [min(cfg.base_width * 2**i, cfg.max_width) for i in range(cfg.depth + 1)]


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        groups = 8
        while channels % groups:
            groups //= 2
        return nn.GroupNorm(groups, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=False)


class ResBlock(nn.Module):
    """Pre-activation residual block; a 1×1 conv shortcut when the width changes."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            make_norm(norm, c_in), act(), nn.Conv2d(c_in, c_out, 3, padding=1),
            make_norm(norm, c_out), act(), nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.shortcut = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x):
        return self.shortcut(x) + self.body(x)


class Down(nn.Module):
    """One encoder level: stride-2 conv halves the resolution, then residual blocks."""

    def __init__(self, c_in: int, c_out: int, blocks: int, norm: str):
        super().__init__()
        self.down = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(c_out, c_out, norm) for _ in range(blocks)])

    def forward(self, x):
        return self.blocks(self.down(x))


class Up(nn.Module):
    """One decoder level: upsample, conv, concatenate the encoder skip, residual blocks."""

    def __init__(self, c_in: int, c_out: int, blocks: int, norm: str):
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c_in, c_out, 3, padding=1), make_norm(norm, c_out), act(),
        )
        self.blocks = nn.Sequential(
            ResBlock(2 * c_out, c_out, norm),
            *[ResBlock(c_out, c_out, norm) for _ in range(blocks - 1)],
        )

    def forward(self, x, skip):
        return self.blocks(torch.cat([self.up(x), skip], dim=1))


class StyleFusion(nn.Module):
    """Global-feature fusion of V(y) into the middle map (Iizuka et al. 2016)."""

    def __init__(self, channels: int, style_dim: int, style_proj: int):
        super().__init__()
        # Per-dimension statistics of the training codes (set once by `train`, saved
        # with the weights). fc1 codes of different images are highly correlated
        # (pairwise r ~0.97 with the random-weight fallback): standardising exposes
        # the small differences that carry the colours to the projection.
        self.register_buffer("style_mean", torch.zeros(style_dim))
        self.register_buffer("style_std", torch.ones(style_dim))
        self.project = nn.Sequential(nn.Linear(style_dim, style_proj), act())
        self.fuse = nn.Sequential(nn.Conv2d(channels + style_proj, channels, 1), act())

    def forward(self, h, style):
        s = self.project((style - self.style_mean) / self.style_std)
        tiled = s[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        return self.fuse(torch.cat([h, tiled], dim=1))


class GuideDecoder(nn.Module):
    """Middle features → full-resolution image, without skips (training only)."""

    def __init__(self, level_widths: list[int], out_channels: int, norm: str):
        super().__init__()
        layers = []
        for c_in, c_out in zip(level_widths[:0:-1], level_widths[-2::-1]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, padding=1), make_norm(norm, c_out), act()]
        layers += [nn.Conv2d(level_widths[0], out_channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, h):
        return self.net(h)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        w = widths(cfg)
        self.stem = nn.Sequential(
            nn.Conv2d(1, w[0], 3, padding=1),
            *[ResBlock(w[0], w[0], cfg.norm) for _ in range(cfg.res_blocks)],
        )
        self.encoder = nn.ModuleList(
            Down(w[i], w[i + 1], cfg.res_blocks, cfg.norm) for i in range(cfg.depth)
        )
        self.fusion = StyleFusion(w[-1], cfg.style_dim, cfg.style_proj)
        self.middle = nn.Sequential(
            *[ResBlock(w[-1], w[-1], cfg.norm) for _ in range(cfg.middle_blocks)]
        )
        self.decoder = nn.ModuleList(
            Up(w[i + 1], w[i], cfg.res_blocks, cfg.norm) for i in reversed(range(cfg.depth))
        )
        self.to_rgb = nn.Sequential(make_norm(cfg.norm, w[0]), act(),
                                    nn.Conv2d(w[0], 3, 3, padding=1), nn.Tanh())
        self.guide_grey = GuideDecoder(w, 1, cfg.norm)
        self.guide_colour = GuideDecoder(w, 3, cfg.norm)

    @torch.no_grad()
    def set_style_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise incoming V(y) with these training-set statistics."""
        self.fusion.style_mean.copy_(mean)
        self.fusion.style_std.copy_(std.clamp_min(1e-4))

    def forward(self, sketch: torch.Tensor, style: torch.Tensor):
        """sketch [B,1,H,W] in [-1,1] (paper white = +1), style [B,style_dim] raw V(y)."""
        _check_size(sketch, self.cfg.depth)

        # Encoder: the sketch's "semantic segmentation" features, kept for the skips.
        h = self.stem(sketch)
        skips = []
        for down in self.encoder:
            skips.append(h)
            h = down(h)

        # Middle entry: what the sketch alone says; guide decoder 1 must paint T(y) from it.
        entry = h

        # Middle: the style code enters, then residual blocks mix it with the features.
        h = self.middle(self.fusion(entry, style.to(h.dtype)))

        # Middle exit: guide decoder 2 must paint the colour target y from it.
        exit_ = h

        # Decoder: paints, level by level, with the encoder's skips.
        for up, skip in zip(self.decoder, reversed(skips)):
            h = up(h, skip)
        out = self.to_rgb(h)

        if not self.training:
            return out
        return out, self.guide_grey(entry), self.guide_colour(exit_)


def _check_size(sketch: torch.Tensor, depth: int) -> None:
    if sketch.dim() != 4 or sketch.shape[1] != 1:
        raise ValueError(f"sketch must be [B,1,H,W], got {tuple(sketch.shape)}")
    factor = 2**depth
    if sketch.shape[2] % factor or sketch.shape[3] % factor:
        raise ValueError(
            f"sketch size {sketch.shape[2]}x{sketch.shape[3]} is not a multiple of "
            f"2**model.depth={factor}"
        )

