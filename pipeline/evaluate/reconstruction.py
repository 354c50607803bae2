"""Reconstruction metrics: the model's output for (sketch of y, V(y)) against y itself.

This is the training task measured on held-out images, and the only metric that
exists for real data (no ground truth for a *different* reference there).
PSNR and SSIM come from scikit-image (maintained implementations); L1 is on the
0..1 scale; colourfulness (Hasler & Suesstrunk) of output and target shows a
washed-out model (a classic L1-trained failure) even when L1 looks fine.
"""
from __future__ import annotations

import logging

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.evaluate.colour import colourfulness, delta_e_map

log = logging.getLogger(__name__)

KEYS = ("l1", "psnr", "ssim", "delta_e", "colourfulness_output", "colourfulness_target")


def image_metrics(output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Metrics of one HxWx3 uint8 output against its HxWx3 uint8 target."""
    if output.shape != target.shape:
        raise ValueError(f"output {output.shape} and target {target.shape} differ in shape")
    out = output.astype(np.float64)
    tgt = target.astype(np.float64)
    # An exact reconstruction has infinite PSNR; cap it so means stay finite.
    psnr = 100.0 if np.array_equal(output, target) else peak_signal_noise_ratio(tgt, out, data_range=255)
    win = min(7, *output.shape[:2])
    win -= 1 - win % 2  # SSIM needs an odd window no larger than the image
    return {
        "l1": float(np.abs(out - tgt).mean() / 255.0),
        "psnr": float(psnr),
        "ssim": float(structural_similarity(tgt, out, data_range=255, channel_axis=2, win_size=win)),
        "delta_e": float(delta_e_map(output, target).mean()),
        "colourfulness_output": colourfulness(output),
        "colourfulness_target": colourfulness(target),
    }


def summarise(rows: list[dict[str, float]]) -> dict:
    """Means over images; `colourfulness_ratio` = output / target (1 = as vivid)."""
    if not rows:
        return {"images": 0}
    out = {k: float(np.mean([r[k] for r in rows])) for k in KEYS}
    out["images"] = len(rows)
    target = out["colourfulness_target"]
    out["colourfulness_ratio"] = out["colourfulness_output"] / target if target > 0 else None
    return out


def held_out_batches(root, split: str, batch_size: int, limit: int):
    """(sketches [B,H,W], styles [B,4096] float32, colours [B,H,W,3]) of `split` rows.

    Rows are read from the aligned colour/sketch/style shard sets in shard order,
    at most `limit` of them, grouped by image size so each batch stacks.
    """
    from pipeline.images import decode_stored
    from pipeline.layout import SHARD_SETS, Layout
    from pipeline.shards import iter_rows

    rows = iter_rows(
        [Layout(root).shards(name) for name in SHARD_SETS],
        columns=[["split", "color"], ["sketch"], ["style"]],
        split=split,
    )
    pending: dict[tuple, list] = {}
    taken = 0
    for row in rows:
        if taken >= limit:
            break
        if row["style"] is None:  # featurize could not decode this colour image
            log.warning("reconstruction: row %s has no style code; skipped", row["id"])
            continue
        taken += 1
        colour = decode_stored(row["color"], 3)
        group = pending.setdefault(colour.shape, [])
        group.append((decode_stored(row["sketch"], 1), np.asarray(row["style"], np.float32), colour))
        if len(group) == batch_size:
            yield _stack(pending.pop(colour.shape))
    for group in pending.values():
        yield _stack(group)


def _stack(group):
    sketches, styles, colours = zip(*group)
    return np.stack(sketches), np.stack(styles), np.stack(colours)


def evaluate_reconstruction(colorizer, root, split: str, batch_size: int, limit: int) -> dict:
    from tqdm import tqdm

    rows = []
    for sketches, styles, colours in tqdm(held_out_batches(root, split, batch_size, limit),
                                          desc="reconstruction", unit="batch"):
        for out, colour in zip(colorizer.paint(sketches, styles), colours):
            rows.append(image_metrics(out, colour))
    return {"split": split, **summarise(rows)}
