"""The Style2paints V1 generator: an enhanced residual U-net with two guide decoders.

Read top to bottom, `Generator.forward` is the paper's architecture figure (arXiv:1706.03319):

    sketch x ─ stem ─ encoder level 1 … depth ──► middle entry ──► guide decoder 1 → T(y) (grey)
                │            │                        │
                │ skips      │        V(y) ─ standardise ─ dense (style_proj) ─ s
                │            │                        │                          │
                │            │      middle blocks (+ s: concat at the entry and/or FiLM in every norm)
                │            │                        │
                │            │                  middle exit ──► guide decoder 2 → y (colour)
                └────────────┴──── decoder level depth … 1 (U-net skips, FiLM by s) ──► to_rgb → G(x, V(y))

Where the style code enters (`model.style_inject`):

- `concat` (the paper, Fig. 2: "the 4096 outputs of VGG's fc1 are regarded as global
  style hint and added to the mid-level layers after a global normalization … we add
  a dense 2048 layer above the fc1"): s is tiled over the middle map, concatenated with
  it and mixed by a 1×1 conv (Iizuka et al. 2016's global fusion, the same as adding a
  learned projection of s). Every later norm is plain, and the decoder has to carry the
  style up through the U-net's skips: with the oracle palette as the code (the true
  colours) this left hair at swap 0.03 after 800 CPU steps (README, conditioning check).
- `film` (ours, the CPU default): s sets a per-channel scale and shift after every
  normalisation of the middle blocks, the decoder levels and the output layer
  (FiLM, Perez et al. 2018; AdaIN-like). The style reaches every resolution
  directly, and since it is applied *after* each norm, no norm can subtract it.
  The modulations start at zero (identity), so training starts from the plain U-net.
- `both`: the paper's concatenation and FiLM.

Choices the paper leaves open, made here (all sizes come from `ModelConfig`):

- Widths: by default level i has min(base_width·2^i, max_width) channels and the
  decoder mirrors the encoder; `encoder_widths`, `middle_width` and
  `decoder_widths` set them explicitly (the paper profile, Fig. 2: encoder
  16, 32, 64, 128, 256, middle 2048, decoder 512, 256, 128, 64, 16). `depth`
  stride-2 downsamplings, so H and W must be multiples of 2^depth.
- Standardisation ("after a global normalization"): the raw code is standardised in
  fp32 with per-dimension mean/std of the *training split's* codes (buffers set once by
  `train`, saved with the weights). A dimension whose std is below `style_std_floor`
  × the median std gets that floor, and standardised values are clipped to
  ±`style_clip`: a dimension that never varied in training has weights that never got
  a gradient, so it must not dominate at inference.
- Residual blocks are pre-activation (norm → act → conv, twice, plus identity;
  He et al. 2016), so every level has a clean identity path for the gradient
  (the paper's cure for the lazy middle, together with the guide decoders).
- Activation: LeakyReLU(0.2) everywhere: no dead units.
- Normalisation (`model.norm`): GroupNorm by default (batch-size independent, no
  SyncBatchNorm under DDP, the same in train() and eval()); `batch` and `none` for
  the ablation.
- Upsampling: nearest ×2 then a 3×3 conv (no transposed convs, no checkerboard).
- Guide decoders: plain decoders without skips (upsample + conv + norm + act per
  level, up to full resolution, then a 3×3 conv and tanh). Having no skips, they
  can only succeed through the middle's features, which is the point.
- `forward` returns (out, guide_grey, guide_colour) in train() and only `out` in
  eval(); inference never runs the guide decoders.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from pipeline.config import ModelConfig


def encoder_widths(cfg: ModelConfig) -> list[int]:
    """Channel width of each U-net level, 0 (full resolution) to depth (the middle)."""
    enc = cfg.encoder_widths or [min(cfg.base_width * 2**i, cfg.max_width) for i in range(cfg.depth)]
    middle = cfg.middle_width or min(cfg.base_width * 2**cfg.depth, cfg.max_width)
    return [*enc, middle]


def decoder_widths(cfg: ModelConfig) -> list[int]:
    """Output width of each decoder level, coarsest (level depth-1) first."""
    return cfg.decoder_widths or encoder_widths(cfg)[-2::-1]


def norm_layer(kind: str, channels: int, affine: bool = True) -> nn.Module:
    if kind == "group":
        groups = 8
        while channels % groups:
            groups //= 2
        return nn.GroupNorm(groups, channels, affine=affine)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=affine)
    return nn.Identity()


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=False)


class ResBlock(nn.Module):
    """Pre-activation residual block; a 1×1 conv shortcut when the width changes."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            norm_layer(norm, c_in), act(), nn.Conv2d(c_in, c_out, 3, padding=1),
            norm_layer(norm, c_out), act(), nn.Conv2d(c_out, c_out, 3, padding=1),
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


class StyledNorm(nn.Module):
    """A norm whose output is scaled and shifted per channel by the style vector s
    (FiLM); with `film` off it is the plain affine norm."""

    def __init__(self, norm: str, channels: int, style_width: int, film: bool):
        super().__init__()
        self.norm = norm_layer(norm, channels, affine=not film)
        self.film = nn.Linear(style_width, 2 * channels) if film else None
        if self.film is not None:  # identity at the start: the plain U-net
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, h, s):
        h = self.norm(h)
        if self.film is None:
            return h
        scale, shift = self.film(s)[:, :, None, None].chunk(2, dim=1)
        return h * (1 + scale) + shift


class StyledResBlock(nn.Module):
    """`ResBlock` with `StyledNorm`s."""

    def __init__(self, c_in: int, c_out: int, norm: str, style_width: int, film: bool):
        super().__init__()
        self.norm1 = StyledNorm(norm, c_in, style_width, film)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = StyledNorm(norm, c_out, style_width, film)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.act = act()
        self.shortcut = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x, s):
        h = self.conv1(self.act(self.norm1(x, s)))
        h = self.conv2(self.act(self.norm2(h, s)))
        return self.shortcut(x) + h


class Up(nn.Module):
    """One decoder level: upsample, conv, concatenate the encoder skip, residual blocks."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, blocks: int, norm: str,
                 style_width: int, film: bool):
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                nn.Conv2d(c_in, c_out, 3, padding=1))
        self.norm = StyledNorm(norm, c_out, style_width, film)
        self.act = act()
        self.blocks = nn.ModuleList(
            [StyledResBlock(c_out + c_skip, c_out, norm, style_width, film)]
            + [StyledResBlock(c_out, c_out, norm, style_width, film) for _ in range(blocks - 1)]
        )

    def forward(self, x, skip, s):
        h = torch.cat([self.act(self.norm(self.up(x), s)), skip], dim=1)
        for block in self.blocks:
            h = block(h, s)
        return h


class StyleCode(nn.Module):
    """V(y) → standardised (fp32, training statistics, floored std, clipped) → dense layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.clip = cfg.style_clip
        self.register_buffer("style_mean", torch.zeros(cfg.style_dim))
        self.register_buffer("style_std", torch.ones(cfg.style_dim))
        self.dense = nn.Sequential(nn.Linear(cfg.style_dim, cfg.style_proj), act())

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        # fp32 even under autocast: a bf16 code loses the small differences that
        # standardising is there to expose.
        device = style.device.type
        plain = (torch.autocast(device, enabled=False) if device in ("cpu", "cuda")
                 else contextlib.nullcontext())  # e.g. the model card's meta device
        with plain:
            z = (style.float() - self.style_mean) / self.style_std
            z = z.clamp(-self.clip, self.clip)
        return self.dense(z)


class GuideDecoder(nn.Module):
    """Middle features → full-resolution image, without skips (training only)."""

    def __init__(self, c_middle: int, widths: list[int], out_channels: int, norm: str):
        super().__init__()
        layers, c_in = [], c_middle
        for c_out in widths:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, padding=1), norm_layer(norm, c_out), act()]
            c_in = c_out
        layers += [nn.Conv2d(c_in, out_channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, h):
        return self.net(h)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.style_dim is None:
            raise ValueError("model.style_dim is unset (Config derives it from featurize.code)")
        self.cfg = cfg
        enc, dec = encoder_widths(cfg), decoder_widths(cfg)
        film = cfg.style_inject in ("film", "both")
        sw = cfg.style_proj
        self.stem = nn.Sequential(
            nn.Conv2d(1, enc[0], 3, padding=1),
            *[ResBlock(enc[0], enc[0], cfg.norm) for _ in range(cfg.res_blocks)],
        )
        self.encoder = nn.ModuleList(
            Down(enc[i], enc[i + 1], cfg.res_blocks, cfg.norm) for i in range(cfg.depth)
        )
        self.style = StyleCode(cfg)
        self.concat = (nn.Sequential(nn.Conv2d(enc[-1] + sw, enc[-1], 1), act())
                       if cfg.style_inject in ("concat", "both") else None)
        self.middle = nn.ModuleList(
            StyledResBlock(enc[-1], enc[-1], cfg.norm, sw, film) for _ in range(cfg.middle_blocks)
        )
        c_in, ups = enc[-1], []
        for level, c_out in zip(reversed(range(cfg.depth)), dec):
            ups.append(Up(c_in, enc[level], c_out, cfg.res_blocks, cfg.norm, sw, film))
            c_in = c_out
        self.decoder = nn.ModuleList(ups)
        self.out_norm = StyledNorm(cfg.norm, c_in, sw, film)
        self.to_rgb = nn.Sequential(act(), nn.Conv2d(c_in, 3, 3, padding=1), nn.Tanh())
        self.guide_grey = GuideDecoder(enc[-1], dec, 1, cfg.norm)
        self.guide_colour = GuideDecoder(enc[-1], dec, 3, cfg.norm)

    @torch.no_grad()
    def set_style_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise incoming V(y) with these training-split statistics; a std
        below `style_std_floor` × the median std is raised to it."""
        floor = self.cfg.style_std_floor * std.float().median().clamp_min(1e-12)
        self.style.style_mean.copy_(mean)
        self.style.style_std.copy_(torch.maximum(std.float(), floor))

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

        # The style code: standardised, then the dense layer over it.
        s = self.style(style).to(h.dtype)

        # Middle: the style enters (concatenated here and/or modulating every norm).
        if self.concat is not None:
            tiled = s[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
            h = self.concat(torch.cat([h, tiled], dim=1))
        for block in self.middle:
            h = block(h, s)

        # Middle exit: guide decoder 2 must paint the colour target y from it.
        exit_ = h

        # Decoder: paints, level by level, with the encoder's skips.
        for up, skip in zip(self.decoder, reversed(skips)):
            h = up(h, skip, s)
        out = self.to_rgb(self.out_norm(h, s))

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
