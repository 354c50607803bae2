"""The toon style-transfer benchmark: exact targets for "sketch A in B's colours".

For pair i (seeds from `evaluate.seed`, a range ingest never uses):
  A  = toon.generate(seed + 3i),   B = toon.generate(seed + 3i + 1),
  B2 = toon.generate(seed + 3i + 2) (the swap test's second reference);
  sketch = the training extractor applied to A's colour image;
  target = toon.rerender(A, B.palette), target2 = toon.rerender(A, B2.palette).
The model paints (sketch, V(B)) and (sketch, V(B2)); every method is scored per
part of A's mask (see `parts.py`); baselines use the same pairs (`baselines.py`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from pipeline.evaluate.baselines import BASELINES, baseline_outputs
from pipeline.evaluate.parts import SCORED_PARTS, part_delta_e, summarise, summarise_swap, swap_scores

log = logging.getLogger(__name__)

METHODS = ("model", *BASELINES)


@dataclass
class Pair:
    seeds: tuple[int, int, int]
    sketch: np.ndarray      # HxW uint8, A's lines
    mask: np.ndarray        # HxW uint8, A's part labels
    own: np.ndarray         # A's colour image
    reference: np.ndarray   # B's colour image
    target: np.ndarray      # A painted with B's palette
    reference2: np.ndarray  # B2's colour image
    target2: np.ndarray     # A painted with B2's palette
    palettes: tuple         # B's and B2's toon palettes (the oracle code reads them)


def make_pairs(count: int, seed: int, size: int, extractor, batch_size: int,
               progress: bool = True) -> list[Pair]:
    """Generate the benchmark pairs; sketches extracted in batches."""
    from pipeline import toon

    pairs = []
    starts = range(0, count, batch_size)
    for start in tqdm(starts, desc="benchmark pairs", unit="batch", disable=not progress):
        chars = []
        for i in range(start, min(count, start + batch_size)):
            seeds = (seed + 3 * i, seed + 3 * i + 1, seed + 3 * i + 2)
            chars.append((seeds, *(toon.generate(s, size) for s in seeds)))
        sketches = extractor.extract([a.image for _, a, _, _ in chars])
        for (seeds, a, b, b2), sketch in zip(chars, sketches):
            pairs.append(Pair(
                seeds=seeds,
                sketch=np.asarray(sketch, np.uint8),
                mask=np.asarray(a.mask),
                own=a.image,
                reference=b.image,
                target=toon.rerender(a, b.palette),
                reference2=b2.image,
                target2=toon.rerender(a, b2.palette),
                palettes=(b.palette, b2.palette),
            ))
    return pairs


def reference_codes(colorizer, pairs: list[Pair], which: int, batch_size: int) -> np.ndarray:
    """Codes of every pair's reference (which=0) or second reference (which=1):
    V of the image, or the true palette for an oracle_palette model."""
    if colorizer.code == "oracle_palette":
        return colorizer.palette_codes([p.palettes[which] for p in pairs])
    images = [p.reference if which == 0 else p.reference2 for p in pairs]
    return colorizer.style_codes(images, batch_size)


def paint_pairs(colorizer, pairs: list[Pair], batch_size: int, codes=None,
                progress: bool = True) -> tuple[list, list]:
    """Model outputs for (sketch, reference) and (sketch, reference2) of every pair.
    `codes` = the two references' codes when already computed (the training monitor)."""
    codes = codes or [reference_codes(colorizer, pairs, w, batch_size) for w in (0, 1)]
    out1, out2 = [], []
    starts = range(0, len(pairs), batch_size)
    for start in tqdm(starts, desc="benchmark model", unit="batch", disable=not progress):
        sketches = np.stack([p.sketch for p in pairs[start : start + batch_size]])
        for code, outs in zip(codes, (out1, out2)):
            outs.extend(colorizer.paint(sketches, code[start : start + batch_size]))
    return out1, out2


def score(pairs: list[Pair], outputs: list, outputs2: list, threshold: float) -> dict:
    """Benchmark, baselines and swap test from painted pairs.

    Returns {"benchmark": {method: {delta_e, hit_rate}}, "per_part": {part:
    {method: {delta_e, hit_rate, count}}}, "swap": {...}}, parts keyed by label.
    """
    per_method: dict[str, list] = {m: [] for m in METHODS}
    swaps = []
    for pair, out1, out2 in zip(pairs, outputs, outputs2):
        candidates = {"model": out1, **baseline_outputs(pair.sketch, pair.reference, pair.own)}
        for method, image in candidates.items():
            per_method[method].append(part_delta_e(image, pair.target, pair.mask))
        swaps.append(swap_scores(out1, out2, pair.target, pair.target2, pair.mask, threshold))
    summaries = {m: summarise(v, threshold) for m, v in per_method.items()}
    return {
        "benchmark": {
            m: {"delta_e": s["delta_e"], "hit_rate": s["hit_rate"]} for m, s in summaries.items()
        },
        "per_part": {
            part: {m: summaries[m]["per_part"][part] for m in METHODS if part in summaries[m]["per_part"]}
            for part in SCORED_PARTS
            if part in summaries["model"]["per_part"]
        },
        "scored_parts": summaries["model"]["scored"],
        "swap": summarise_swap(swaps),
    }


def per_part_rows(result: dict, part_names: dict[int, str]) -> list[dict]:
    """Long-format rows for per_part.csv: one per (part, method), plus part 'all'."""
    rows = []
    for part, methods in result["per_part"].items():
        for method, s in methods.items():
            rows.append(_row(part_names[part], method, s["delta_e"], s["hit_rate"]))
    for method, s in result["benchmark"].items():
        rows.append(_row("all", method, s["delta_e"], s["hit_rate"]))
    return rows


def _row(part: str, method: str, delta_e, hit_rate) -> dict:
    return {
        "part": part,
        "method": method,
        "mean_delta_e": round(delta_e, 4),
        "hit_rate": round(hit_rate, 4),
        "label": f"{part}/{method}",
    }
