"""Per-part scoring: ΔE00 inside each semantic part of A's mask, hits, swap test.

Parts are the toon labels 0..6 (background, skin, hair, eyes, upper, lower,
accessory); label 7 (outline pixels) is never scored, since the target is black
there whatever the palette. A part absent from a character is not scored (it is
neither a hit nor a miss).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from pipeline.evaluate.colour import ciede2000, srgb_to_lab

SCORED_PARTS = tuple(range(7))


def part_delta_e(output: np.ndarray, target: np.ndarray, mask: np.ndarray,
                 parts=SCORED_PARTS) -> dict[int, float]:
    """{part: mean ΔE00 between output and target over the part's pixels}."""
    de = ciede2000(srgb_to_lab(output), srgb_to_lab(target))
    scores = {}
    for part in parts:
        inside = mask == part
        if inside.any():
            scores[part] = float(de[inside].mean())
    return scores


def summarise(per_pair: list[dict[int, float]], threshold: float) -> dict:
    """Aggregate per-pair part scores.

    Overall `delta_e` is the mean over every (pair, present part), so each part
    instance weighs the same whatever its area; `hit_rate` is the share of those
    with mean ΔE00 < threshold. `per_part[p]` restricts both to part p.
    """
    by_part: dict[int, list[float]] = defaultdict(list)
    for scores in per_pair:
        for part, value in scores.items():
            by_part[part].append(value)
    every = [v for values in by_part.values() for v in values]
    return {
        "delta_e": _mean(every),
        "hit_rate": _hit_rate(every, threshold),
        "scored": len(every),
        "per_part": {
            part: {"delta_e": _mean(v), "hit_rate": _hit_rate(v, threshold), "count": len(v)}
            for part, v in sorted(by_part.items())
        },
    }


def swap_scores(out1, out2, target1, target2, mask, min_shift: float,
                parts=SCORED_PARTS) -> dict[int, dict]:
    """How far the output follows a change of reference, per part.

    Same sketch, two references: out_i is the model's output for reference i and
    target_i the exact answer. With mean CIELAB colours o_i, t_i of a part:
      projection  = (o1 - o2) . (t1 - t2) / |t1 - t2|^2   (1: follows exactly,
                    0: the output ignores the reference, < 0: moves the wrong way);
      toward_1    = (ΔE(o2, t1) - ΔE(o1, t1)) / ΔE(t2, t1): how much closer to
                    reference 1's colour the output gets when given reference 1
                    rather than 2 (same scale: 1 perfect, 0 ignored); toward_2 alike.
    Parts whose two targets differ by less than `min_shift` ΔE00 are skipped:
    there is no change to follow there and the ratios would be noise.
    """
    labs = [srgb_to_lab(x) for x in (out1, out2, target1, target2)]
    result = {}
    for part in parts:
        inside = mask == part
        if not inside.any():
            continue
        o1, o2, t1, t2 = (lab[inside].mean(axis=0) for lab in labs)
        target_shift = float(ciede2000(t1, t2))
        if target_shift < min_shift:
            continue
        dt = t1 - t2
        result[part] = {
            "projection": float(np.dot(o1 - o2, dt) / np.dot(dt, dt)),
            "toward_1": float((ciede2000(o2, t1) - ciede2000(o1, t1)) / target_shift),
            "toward_2": float((ciede2000(o1, t2) - ciede2000(o2, t2)) / target_shift),
            "output_shift": float(ciede2000(o1, o2)),
            "target_shift": target_shift,
        }
    return result


def summarise_swap(per_pair: list[dict[int, dict]]) -> dict:
    """Means over every scored (pair, part) of the swap statistics, and per part."""
    keys = ("projection", "toward_1", "toward_2", "output_shift", "target_shift")
    every = [s for scores in per_pair for s in scores.values()]
    by_part: dict[int, list[dict]] = defaultdict(list)
    for scores in per_pair:
        for part, s in scores.items():
            by_part[part].append(s)
    out = {k: _mean([s[k] for s in every]) for k in keys}
    out["scored"] = len(every)
    out["per_part"] = {
        part: {"projection": _mean([s["projection"] for s in v]), "count": len(v)}
        for part, v in sorted(by_part.items())
    }
    return out


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _hit_rate(values, threshold: float) -> float | None:
    return float(np.mean(np.asarray(values) < threshold)) if len(values) else None
