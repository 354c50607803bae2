"""The information ceiling: how much of each part's colour a style code carries.

    python benchmarks/style_probe.py [--toons 1500] [--size 64] [--codes fc1 fc1_relu pooled]
                                     [--weights PATH] [--input-size 128] [--json out.json]

For N toon characters (seeds from 0, like ingest) the script computes each code
variant of the colour image ("own") and of one augmented-self copy ("aug", the
distortion featurize applies: `pipeline/augment.py`), then fits a ridge
regression from the code to every part's true base colour (CIELAB, from the
toon palette) and reports the held-out R² per part, averaged over L, a, b:

    own → own   fit and test on codes of undistorted images (5-fold CV);
    aug → aug   fit and test on codes of distorted copies (5-fold CV);
    aug → own   fit on distorted copies of the first 90%, test on the undistorted
                codes of the last 10%: what the generator faces (it learns from
                augmented self-references and is tested on clean references).

R² is the share of a part's colour variance a linear read-out recovers; a swap
projection (the benchmark's "does the output follow the reference") cannot be
expected above it for a model that reads the code linearly.

`--pairs P` (default 64) also puts that read-out through the benchmark's own swap
test, in the benchmark's units: the aug → own probe, fitted on every toon's
augmented copy, predicts each part's colour from the codes of the two references
(B, B2) of the evaluate stage's first P pairs (seeds from `--eval-seed`, as
evaluate), and projection = (p1 - p2)·(t1 - t2)/|t1 - t2|² with t_i the true base
colours of B_i's palette; a part counts where it is in A's mask and its two
colours differ by ≥ `--hit-threshold` ΔE00, as in the benchmark. This is the
swap a linear read-out of the code reaches: the column to read the model's swap
projection against. The ridge penalty is
chosen per variant by inner cross-validation. The oracle code is the palette
itself (R² 1 by construction) and is not probed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import toon  # noqa: E402
from pipeline.augment import distort_for_reference  # noqa: E402
from pipeline.evaluate.colour import ciede2000, srgb_to_lab  # noqa: E402
from pipeline.style_encoder import CODE_DIMS, StyleEncoder  # noqa: E402

PARTS = ("background", "skin", "hair", "eyes", "upper", "lower", "accessory")
PENALTIES = (1e1, 3e1, 1e2, 3e2, 1e3, 3e3, 1e4)


def part_colours(palette: toon.Palette) -> np.ndarray:
    """[len(PARTS) * 3] CIELAB base colours."""
    rgb = np.array([[getattr(palette, p) for p in PARTS]], np.uint8)
    return srgb_to_lab(rgb)[0].reshape(-1)


def ridge(x: np.ndarray, y: np.ndarray, penalty: float):
    """Fit on standardised x (dual form: N is small next to the code width)."""
    mean, std = x.mean(0), x.std(0)
    std = np.maximum(std, 0.1 * np.median(std) + 1e-12)
    xs = (x - mean) / std
    y_mean = y.mean(0)
    alpha = np.linalg.solve(xs @ xs.T + penalty * np.eye(len(x)), y - y_mean)
    weights = xs.T @ alpha
    return lambda z: ((z - mean) / std) @ weights + y_mean


def r2(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return 1 - ((y - pred) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def cross_validated(x_fit: np.ndarray, x_test: np.ndarray, y: np.ndarray, penalty: float,
                    folds: int = 5) -> np.ndarray:
    pred = np.zeros_like(y)
    fold = np.arange(len(y)) % folds
    for f in range(folds):
        pred[fold == f] = ridge(x_fit[fold != f], y[fold != f], penalty)(x_test[fold == f])
    return r2(y, pred)


def best_penalty(x_fit: np.ndarray, x_test: np.ndarray, y: np.ndarray) -> float:
    return max(PENALTIES, key=lambda lam: cross_validated(x_fit, x_test, y, lam).mean())


def per_part(values: np.ndarray) -> dict[str, float]:
    return {p: float(values[3 * i:3 * i + 3].mean()) for i, p in enumerate(PARTS)}


def probe(own: np.ndarray, aug: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    cut = int(0.9 * len(y))
    lam_own = best_penalty(own, own, y)
    lam_aug = best_penalty(aug[:cut], own[:cut], y[:cut])
    transfer = r2(y[cut:], ridge(aug[:cut], y[:cut], lam_aug)(own[cut:]))
    return {
        "own -> own": per_part(cross_validated(own, own, y, lam_own)),
        "aug -> aug": per_part(cross_validated(aug, aug, y, lam_aug)),
        "aug -> own": per_part(transfer),
    }


def probe_swap(own: np.ndarray, aug: np.ndarray, y: np.ndarray, refs: tuple[np.ndarray, np.ndarray],
               truth: tuple[np.ndarray, np.ndarray], present: np.ndarray,
               min_shift: float) -> dict[str, float]:
    """Swap projection of the aug -> own read-out on the benchmark's reference pairs.
    refs: the codes of B and B2 [P, dim]; truth: their part colours [P, 3*parts];
    present: [P, parts] bool, the part is in A's mask."""
    read_out = ridge(aug, y, best_penalty(aug, own, y))
    p1, p2 = (read_out(code) for code in refs)
    projections: dict[str, list[float]] = {part: [] for part in PARTS}
    for i in range(len(p1)):
        for k, part in enumerate(PARTS):
            cut = slice(3 * k, 3 * k + 3)
            t1, t2 = truth[0][i, cut], truth[1][i, cut]
            if not present[i, k] or float(ciede2000(t1, t2)) < min_shift:
                continue
            dt = t1 - t2
            projections[part].append(float(np.dot(p1[i, cut] - p2[i, cut], dt) / np.dot(dt, dt)))
    every = [v for values in projections.values() for v in values]
    result = {part: float(np.mean(v)) if v else float("nan") for part, v in projections.items()}
    result["all"] = float(np.mean(every))
    return result


def codes_of(encoder: StyleEncoder, images: list[np.ndarray], batch: int = 32) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([encoder.encode(np.stack(images[i:i + batch])).numpy()
                               for i in range(0, len(images), batch)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toons", type=int, default=1500)
    ap.add_argument("--size", type=int, default=64, help="toon resolution (data.resolution)")
    ap.add_argument("--codes", nargs="+", default=list(CODE_DIMS), choices=list(CODE_DIMS))
    ap.add_argument("--weights", default=None, help="VGG19 ImageNet weights (default: random)")
    ap.add_argument("--input-size", type=int, default=128, help="featurize.input_size")
    ap.add_argument("--pairs", type=int, default=64,
                    help="benchmark pairs for the read-out's swap projection (0: skip)")
    ap.add_argument("--eval-seed", type=int, default=10_000_000, help="evaluate.seed")
    ap.add_argument("--hit-threshold", type=float, default=10.0, help="evaluate.hit_threshold")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    started = time.perf_counter()
    images, augmented, colours = [], [], []
    for seed in range(args.toons):
        character = toon.generate(seed, args.size)
        images.append(character.image)
        augmented.append(distort_for_reference(character.image, np.random.default_rng([7, seed])))
        colours.append(part_colours(character.palette))
    y = np.stack(colours)
    references: tuple[list, list] = ([], [])
    reference_colours: tuple[list, list] = ([], [])
    present = []
    for i in range(args.pairs):  # the evaluate stage's pairs: A, B, B2
        a = toon.generate(args.eval_seed + 3 * i, args.size)
        present.append([bool((a.mask == k).any()) for k in range(len(PARTS))])
        for which in (0, 1):
            b = toon.generate(args.eval_seed + 3 * i + 1 + which, args.size)
            references[which].append(b.image)
            reference_colours[which].append(part_colours(b.palette))
    results, swaps, source = {}, {}, None
    for code in args.codes:
        encoder = StyleEncoder(args.weights, args.input_size, seed=0, code=code)
        source = encoder.source
        own, aug = codes_of(encoder, images), codes_of(encoder, augmented)
        results[code] = probe(own, aug, y)
        if args.pairs:
            swaps[code] = probe_swap(own, aug, y, tuple(codes_of(encoder, r) for r in references),
                                     tuple(np.stack(c) for c in reference_colours),
                                     np.array(present), args.hit_threshold)
        print(f"{code}: probed in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    print(f"\nLinear-probe R² of each part's colour ({args.toons} toons at {args.size} px, "
          f"VGG19 weights: {source}, input {args.input_size}²)\n")
    print("| code | fit → test | " + " | ".join(PARTS) + " |")
    print("|---|---|" + "---|" * len(PARTS))
    for code, rows in results.items():
        for setting, values in rows.items():
            cells = " | ".join(f"{values[p]:.2f}" for p in PARTS)
            print(f"| {code} | {setting} | {cells} |")
    if swaps:
        print(f"\nSwap projection of the aug → own read-out on the first {args.pairs} benchmark "
              f"pairs' references (the model's swap projection, read against it)\n")
        print("| code | all | " + " | ".join(PARTS) + " |")
        print("|---|---|" + "---|" * len(PARTS))
        for code, values in swaps.items():
            cells = " | ".join(f"{values[p]:.2f}" for p in ("all", *PARTS))
            print(f"| {code} | {cells} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"toons": args.toons, "size": args.size,
                                               "style_encoder": source, "results": results,
                                               "swap": swaps, "pairs": args.pairs}, indent=2))


if __name__ == "__main__":
    main()
