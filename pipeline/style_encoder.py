"""The frozen VGG19 style encoder V(y) and the style codes read from it.

`featurize.code` chooses what V(y) is (`CODE_DIMS` gives each width):
- `fc1` (the paper): torchvision VGG19 `features` → `avgpool` (adaptive 7×7, so
  inputs smaller than 224 work) → flatten → `classifier[0]` (fc1), **before** its
  ReLU ("from the output of VGG 19's fc1, without the Relu activation"), 4096-d.
  fc1 is position-indexed: it says where colours are, and changes when the
  picture is cropped, rotated or flipped.
- `fc1_relu`: the same after the ReLU (this project's first code; kept for the
  ablation: after the ReLU about 30% of the dims are zero for every image).
- `pooled` (ours): per-channel mean and standard deviation over all positions
  of relu1_2, relu2_2, relu3_4, relu4_4 and relu5_4 (64+128+256+512+512 channels,
  2944-d). Translation-invariant, like the official V1 *server*, which fed
  globally pooled GoogLeNet features into the generator; fc1 is never computed.
- `bands` (ours): per-channel means of the same five layers over three
  horizontal bands (top, middle and bottom third; 4416-d). Invariant to left-right
  shifts and mirroring, but it keeps where colours sit vertically (hair above
  the garments in an upright character).
The discriminator's [0, 1] target is derived from any of them by `losses.norm_style`.

Always in eval mode, no parameter requires grad, forward under no_grad; ImageNet
mean/std normalisation; images are resized (bilinear, antialiased) to `input_size`.

Weights, in order (no network access, ever):
1. `weights` (featurize.weights) when set and present;
2. torch's hub cache, `torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth`
   (where `torchvision.models.vgg19(weights="IMAGENET1K_V1")` would put it);
3. otherwise seeded random weights (torchvision's init distributions drawn after
   torch.manual_seed(seed), in a forked RNG so the caller's stream is untouched),
   logged in one line, `.source == "random"`. The stages record `.source` in their metrics.
A weights file that exists but cannot be read is an error, not a fallback.

`precision="bf16"` runs the network under bfloat16 autocast (about 1.7x faster
on CPUs with AVX512-BF16; codes within ~1% of fp32). featurize, train's
learning curves, evaluate and `s2p colorize` all use the precision recorded
with the codes, so a model never sees codes of another precision.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from pipeline.config import STYLE_CODE_DIMS

log = logging.getLogger(__name__)

HUB_FILENAME = "vgg19-dcbb9e9d.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# relu1_2, relu2_2, relu3_4, relu4_4, relu5_4: the last ReLU of each block.
POOLED_LAYERS = (3, 8, 17, 26, 35)
POOLED_CHANNELS = (64, 128, 256, 512, 512)
# The VGG codes (config.STYLE_CODE_DIMS also lists the oracle's; a test checks
# that pooled's width is 2 * sum(POOLED_CHANNELS)).
CODE_DIMS = {code: STYLE_CODE_DIMS[code] for code in ("fc1", "fc1_relu", "pooled", "bands")}
BANDS = 3


def hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILENAME


def resolve_weights(weights: str | Path | None) -> Path | None:
    """The weights file that will be used, or None for the random fallback."""
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            return path
    hub = hub_weights_path()
    return hub if hub.is_file() else None


class StyleEncoder(nn.Module):
    def __init__(self, weights: str | Path | None = None, input_size: int = 224, seed: int = 0,
                 precision: str = "fp32", code: str = "fc1"):
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        if code not in CODE_DIMS:
            raise ValueError(f"code must be one of {sorted(CODE_DIMS)}, got {code!r}")
        self.input_size = int(input_size)
        self.precision = precision
        self.code = code
        self.dim = CODE_DIMS[code]
        path = resolve_weights(weights)
        if path is None:
            vgg = _random_vgg(seed, with_fc1=code.startswith("fc1"))
            self.source = "random"
            self.weights_path = None
            log.warning(
                "VGG19 ImageNet weights not found (featurize.weights=%s, hub cache %s): "
                "using seeded random weights (seed %d); style_encoder=random",
                weights, hub_weights_path(), seed,
            )
        else:
            vgg = _load_vgg(path)
            self.source = "imagenet"
            self.weights_path = str(path)
            absent = "" if weights is None or Path(weights).expanduser() == path else (
                f" (featurize.weights={weights} is absent)")
            log.info("VGG19 ImageNet weights loaded from %s%s", path, absent)
        # fc2/fc3 (~20 M parameters) are never used; the pooled code needs no fc1
        # (103 M parameters) and no conv after relu5_4's block end.
        self.features = vgg.features.to(memory_format=torch.channels_last)  # ~1.4x on CPU
        self.avgpool = vgg.avgpool
        self.fc1 = vgg.classifier[0] if code.startswith("fc1") else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        """Frozen: stays in eval mode whatever the caller asks."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] float in [0,1] -> [B, dim] float32."""
        x = x.to(self.mean.device, torch.float32)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            if self.fc1 is None:
                return self._pooled(x)
            fc1 = self.fc1(torch.flatten(self.avgpool(self.features(x)), 1)).float()
        return fc1.clamp_min(0) if self.code == "fc1_relu" else fc1

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        """`pooled` or `bands`: statistics of the five block-end ReLUs."""
        parts, stds = [], []
        for i, layer in enumerate(self.features[: POOLED_LAYERS[-1] + 1]):
            x = layer(x)
            if i not in POOLED_LAYERS:
                continue
            h = x.float()
            if self.code == "bands":
                parts.append(F.adaptive_avg_pool2d(h, (BANDS, 1)).flatten(1))
            else:
                parts.append(h.flatten(2).mean(2))
                stds.append(h.flatten(2).std(2, correction=0))
        return torch.cat(parts + stds, dim=1)

    def encode(self, images) -> torch.Tensor:
        """uint8 NHWC numpy (or a list of HxWx3 uint8) or float [B,3,H,W] in [0,1] -> [B, dim]."""
        if isinstance(images, list):
            images = np.stack(images)
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"expected uint8 NHWC RGB images, got {images.dtype} "
                                 f"{images.shape}")
            x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        elif isinstance(images, torch.Tensor):
            if images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"expected [B,3,H,W] images, got {tuple(images.shape)}")
            x = images
        else:
            raise TypeError(f"cannot encode {type(images).__name__}")
        return self(x)


def _random_vgg(seed: int, with_fc1: bool = True) -> nn.Module:
    """VGG19 with torchvision's init distributions (conv: Kaiming normal, fan_out;
    linear: N(0, 0.01); biases 0) drawn from `seed` in a forked RNG. Only the
    layers we keep are drawn (fc2/fc3 stay empty), which halves the start-up;
    the convs come first, so they are the same with or without fc1."""
    with torch.device("meta"):
        vgg = torchvision.models.vgg19(weights=None)
    vgg.features.to_empty(device="cpu")
    kept = [*vgg.features]
    if with_fc1:
        vgg.classifier[0].to_empty(device="cpu")
        kept.append(vgg.classifier[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in kept:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
    return vgg


def _load_vgg(path: Path) -> nn.Module:
    """torchvision VGG19 with the weights of `path`; built on the meta device and
    assigned the loaded tensors, so no time goes into a random init first."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a bad file
        raise ValueError(f"{path}: cannot read VGG19 weights ({type(err).__name__}: {err})"[:300]) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    with torch.device("meta"):
        vgg = torchvision.models.vgg19(weights=None)
    try:
        vgg.load_state_dict(state, assign=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{path}: not a torchvision VGG19 state_dict ({first})"[:300]) from None
    return vgg.float()
