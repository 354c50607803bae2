"""Agreement of the classical extractors with real sketchKeras outputs.

    python benchmarks/sketch_agreement.py [--pairs ../shared/samples/real/sketchkeras_pairs]

For each pair (colour illustration, the line art the released sketchKeras weights
made from it) every classical variant extracts a `raw` sketch (the references are
sketchKeras's raw output) and is scored by Pearson correlation of darkness and
line-pixel F1 (pipeline/sketch/agreement.py). The plain greyscale image is a
baseline that shows what "no extraction" scores. The variant with the best mean
of (Pearson + F1) / 2 is the one to use as `extract.classical`; the script only
selects among fixed variants, it fits nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.sketch import agreement, classical  # noqa: E402

DEFAULT_PAIRS = Path(__file__).resolve().parents[2] / "shared" / "samples" / "real" / "sketchkeras_pairs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    args = parser.parse_args()
    pairs = agreement.load_pairs(args.pairs)
    if not pairs:
        raise SystemExit(f"error: {args.pairs}: no *_color / *_sketchkeras pairs")

    names = [stem for stem, _, _ in pairs]
    header = "| extractor | " + " | ".join(f"{n} r | {n} F1" for n in names) + " | mean r | mean F1 | score |"
    print(header)
    print("|" + "---|" * (3 + 2 * len(names) + 1))
    rows = {}
    candidates = [("greyscale image (baseline)", None)] + [(v, v) for v in classical.VARIANTS]
    for label, variant in candidates:
        cells, rs, fs = [], [], []
        started = time.perf_counter()
        for _, rgb, ref in pairs:
            if variant is None:
                sketch = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            else:
                sketch = classical.ClassicalExtractor(variant, "raw", 512).extract([rgb])[0]
            r, f = agreement.pearson(sketch, ref), agreement.line_f1(sketch, ref)
            rs.append(r)
            fs.append(f)
            cells += [f"{r:.3f}", f"{f:.3f}"]
        mean_r, mean_f = sum(rs) / len(rs), sum(fs) / len(fs)
        score = (mean_r + mean_f) / 2
        if variant is not None:
            rows[variant] = score
        print(f"| {label} | " + " | ".join(cells) + f" | {mean_r:.3f} | {mean_f:.3f} | {score:.3f} |")
    best = max(rows, key=rows.get)
    print(f"\nbest: {best} (score {rows[best]:.3f}); extract.classical default: {classical.DEFAULT_VARIANT}")
    print(f"line pixel: darkness >= {agreement.LINE_DARKNESS}; sketches at the references' size "
          f"({', '.join(f'{ref.shape[1]}x{ref.shape[0]}' for _, _, ref in pairs)})")


if __name__ == "__main__":
    main()
