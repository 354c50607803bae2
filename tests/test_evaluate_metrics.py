"""Benchmark metrics on constructed cases: perfect = 0, baselines ordered, swap 0/1,
reconstruction metrics, aggregation. No model, no toon generator: fast and exact."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluate.baselines import baseline_outputs, mean_colour_baseline
from pipeline.evaluate.benchmark import Pair, per_part_rows, score
from pipeline.evaluate.parts import part_delta_e, summarise, swap_scores
from pipeline.evaluate.reconstruction import image_metrics
from pipeline.evaluate.reconstruction import summarise as summarise_recon

BG, HAIR, LINE = 0, 2, 7
GREEN, YELLOW = (60, 180, 75), (240, 220, 40)
RED, BLUE = (220, 40, 40), (40, 60, 220)
PINK, TEAL = (250, 170, 200), (20, 150, 150)


def scene(bg, hair, size=32):
    """A square of hair on a background, outlined in black; returns (image, mask, sketch)."""
    mask = np.full((size, size), BG, np.uint8)
    mask[8:24, 8:24] = LINE
    mask[9:23, 9:23] = HAIR
    image = np.zeros((size, size, 3), np.uint8)
    image[mask == BG] = bg
    image[mask == HAIR] = hair
    sketch = np.where(mask == LINE, 0, 255).astype(np.uint8)
    return image, mask, sketch


def make_pair(own=(GREEN, YELLOW), ref=(RED, BLUE), ref2=(PINK, TEAL)):
    a, mask, sketch = scene(*own)
    target, _, _ = scene(*ref)
    target2, _, _ = scene(*ref2)
    return Pair(seeds=(0, 1, 2), sketch=sketch, mask=mask, own=a, reference=target.copy(),
                target=target, reference2=target2.copy(), target2=target2, palettes=(None, None))


def test_perfect_output_scores_zero_and_lines_are_not_scored():
    pair = make_pair()
    out = pair.target.copy()
    out[pair.mask == LINE] = (255, 0, 255)  # anything on the lines is ignored
    scores = part_delta_e(out, pair.target, pair.mask)
    assert set(scores) == {BG, HAIR}
    assert all(v == 0.0 for v in scores.values())


def test_baselines_ordered_on_constructed_case():
    pair = make_pair()
    outs = baseline_outputs(pair.sketch, pair.reference, pair.own)
    de = {k: np.mean(list(part_delta_e(v, pair.target, pair.mask).values())) for k, v in outs.items()}
    perfect = np.mean(list(part_delta_e(pair.target, pair.target, pair.mask).values()))
    assert perfect == 0.0
    # The reference's average colour is closer than ignoring it or painting nothing.
    assert 0 < de["mean_colour"] < de["own_palette"]
    assert de["mean_colour"] < de["sketch"]
    # Same palette for A and B: the own-palette baseline is exact.
    same = make_pair(own=(RED, BLUE))
    own = part_delta_e(same.own, same.target, same.mask)
    assert max(own.values()) == 0.0


def test_mean_colour_baseline_keeps_lines_dark():
    _, mask, sketch = scene(GREEN, YELLOW)
    out = mean_colour_baseline(sketch, np.full((8, 8, 3), (100, 50, 200), np.uint8))
    assert (out[mask == LINE] == 0).all()
    assert (out[mask == BG] == (100, 50, 200)).all()


def test_swap_metric_zero_when_reference_ignored_one_when_followed():
    pair = make_pair()
    perfect = swap_scores(pair.target, pair.target2, pair.target, pair.target2, pair.mask, 10.0)
    ignore = swap_scores(pair.own, pair.own, pair.target, pair.target2, pair.mask, 10.0)
    assert set(perfect) == {BG, HAIR}
    for part in perfect:
        assert perfect[part]["projection"] == pytest.approx(1.0)
        assert perfect[part]["toward_1"] == pytest.approx(1.0)
        assert perfect[part]["toward_2"] == pytest.approx(1.0)
        assert ignore[part]["projection"] == pytest.approx(0.0)
        assert ignore[part]["toward_1"] == pytest.approx(0.0)
        assert ignore[part]["toward_2"] == pytest.approx(0.0)
    # Swapped outputs move the wrong way.
    wrong = swap_scores(pair.target2, pair.target, pair.target, pair.target2, pair.mask, 10.0)
    assert all(s["projection"] == pytest.approx(-1.0) for s in wrong.values())
    # Halfway in Lab is about 0.5.
    mid = swap_scores(*_halfway(pair), pair.target, pair.target2, pair.mask, 10.0)
    assert all(0.35 < s["projection"] < 0.65 for s in mid.values())
    # Parts whose two targets barely differ are not scored (bg identical, hair 1 unit off).
    same = make_pair(ref2=(RED, (40, 60, 221)))
    assert swap_scores(same.target, same.target2, same.target, same.target2, same.mask, 10.0) == {}


def _halfway(pair):
    mid = ((pair.target.astype(int) + pair.target2) // 2).astype(np.uint8)
    return pair.target, mid


def test_summarise_hit_rate_and_absent_parts():
    per_pair = [{0: 2.0, 2: 30.0}, {0: 4.0}]
    s = summarise(per_pair, threshold=10.0)
    assert s["delta_e"] == pytest.approx(12.0)
    assert s["hit_rate"] == pytest.approx(2 / 3)
    assert s["per_part"][0] == {"delta_e": 3.0, "hit_rate": 1.0, "count": 2}
    assert s["per_part"][2]["hit_rate"] == 0.0
    assert 1 not in s["per_part"]


def test_score_table_and_csv_rows():
    pairs = [make_pair(), make_pair(own=(RED, BLUE))]
    outs = [p.target for p in pairs]
    outs2 = [p.target2 for p in pairs]
    result = score(pairs, outs, outs2, threshold=10.0)
    assert result["benchmark"]["model"] == {"delta_e": 0.0, "hit_rate": 1.0}
    assert result["benchmark"]["sketch"]["hit_rate"] < 1.0
    assert result["swap"]["projection"] == pytest.approx(1.0)
    assert result["scored_parts"] == 4
    rows = per_part_rows(result, {0: "background", 2: "hair"})
    assert {r["method"] for r in rows} == {"model", "sketch", "mean_colour", "own_palette"}
    assert {r["part"] for r in rows} == {"background", "hair", "all"}
    assert len(rows) == 3 * 4


def test_reconstruction_metrics():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    exact = image_metrics(target, target)
    assert exact["l1"] == 0.0 and exact["ssim"] == pytest.approx(1.0) and exact["delta_e"] == 0.0
    noisy = np.clip(target.astype(int) + rng.integers(-20, 21, target.shape), 0, 255).astype(np.uint8)
    grey = np.repeat(target.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    m_noisy, m_grey = image_metrics(noisy, target), image_metrics(grey, target)
    assert 0 < m_noisy["l1"] < 0.1 and 20 < m_noisy["psnr"] < 50 and m_noisy["ssim"] < 1
    assert m_grey["colourfulness_output"] == pytest.approx(0.0, abs=1.0)
    s = summarise_recon([m_noisy, m_grey])
    assert s["images"] == 2 and s["colourfulness_ratio"] < 1
    assert summarise_recon([]) == {"images": 0}
    # Tiny images still get a valid SSIM window.
    assert image_metrics(target[:5, :5], target[:5, :5])["ssim"] == pytest.approx(1.0)
