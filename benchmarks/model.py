"""Model card figures: parameters and FLOPs per image for the CPU default, the paper's
Fig. 2 profile and our larger GPU profile.

    python benchmarks/model.py [--params params.yaml] [--size 256]

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode on the meta device
(no arithmetic is done, so the paper-scale count is instant); they count
convolutions and matmuls as 2·MACs, forward pass only, batch of one. "train"
includes both guide decoders; "inference" is the main path only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import ModelConfig, load_config  # noqa: E402
from pipeline.models import build_discriminator, build_generator  # noqa: E402

# The GPU profiles' model sections (profiles/*.yaml): the paper's Fig. 2 and ours, large.
PROFILES = {"paper (Fig. 2; profiles/paper.yaml)": "paper",
            "ours, large (profiles/large.yaml)": "large"}


def profile_model(name: str) -> dict:
    """The profile's model section, with the width of its featurize.code."""
    import yaml

    from pipeline.config import STYLE_CODE_DIMS, FeaturizeConfig

    path = Path(__file__).resolve().parents[1] / "profiles" / f"{name}.yaml"
    profile = yaml.safe_load(path.read_text())
    code = profile.get("featurize", {}).get("code", FeaturizeConfig().code)
    return {**profile.get("model", {}), "style_dim": STYLE_CODE_DIMS[code]}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def params(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if not n.startswith(skip))


def model_row(name: str, cfg: ModelConfig, size: int) -> dict:
    with torch.device("meta"):
        G, D = build_generator(cfg), build_discriminator(cfg)
        sketch, style = torch.empty(1, 1, size, size), torch.empty(1, cfg.style_dim)
        image = torch.empty(1, 3, size, size)
    G.train()
    train_flops = count_flops(lambda: G(sketch, style))
    G.eval()
    infer_flops = count_flops(lambda: G(sketch, style))
    return {
        "setting": name,
        "G params": params(G),
        "G params (inference)": params(G, ("guide_grey.", "guide_colour.")),
        "G GFLOPs train": train_flops / 1e9,
        "G GFLOPs inference": infer_flops / 1e9,
        "D params": params(D),
        "D GFLOPs": count_flops(lambda: D(image)) / 1e9,
    }


def vgg_row(input_size: int) -> dict:
    with torch.device("meta"):
        vgg = torchvision.models.vgg19(weights=None)
        x = torch.empty(1, 3, input_size, input_size)
    fc1 = torch.nn.Sequential(vgg.features, vgg.avgpool, torch.nn.Flatten(), vgg.classifier[0])
    return {"input": input_size, "params": params(fc1),
            "GFLOPs": count_flops(lambda: fc1(x)) / 1e9}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, int) and v >= 10_000:
        return f"{v / 1e6:.2f} M"
    return str(v)


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="the CPU default's params file")
    ap.add_argument("--size", type=int, default=256, help="square input size in pixels")
    args = ap.parse_args()
    default = load_config(args.params).model
    rows = [model_row("CPU default (params.yaml)", default, args.size)]
    for name, profile in PROFILES.items():
        overlay = profile_model(profile)
        rows.append(model_row(name, ModelConfig(**{**default.model_dump(), **overlay}), args.size))
    print(f"Networks, per {args.size}² image (forward, batch 1):\n")
    print(table(rows))
    for name, profile in PROFILES.items():
        print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in profile_model(profile).items()))
    print("\nFrozen VGG19 style encoder up to fc1 (featurize, once per image):\n")
    print(table([vgg_row(128), vgg_row(224)]))


if __name__ == "__main__":
    main()
