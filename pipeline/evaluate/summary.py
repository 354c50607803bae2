"""The headline metrics: one small flat file, `data/summary.json`, the only file
dvc.yaml declares as `metrics`, so that `dvc metrics show`, `dvc metrics diff`
and `dvc exp show` print a few columns that read well (issue 11).

Every other figure stays in the stages' full records (`data/metrics/<stage>.json`,
versioned in git, not DVC metrics) and in the plots (per part and method).

    de       the model's mean CIEDE2000 on the toon benchmark (lower is better)
    hit      the model's hit rate: share of parts with mean ΔE00 < hit_threshold
    swap     swap projection: 1 = follows the reference, 0 = ignores it
    de_mean  baseline: the reference's mean colour under the lines
    de_own   baseline: A's own palette (ignores the reference: its best case)
    psnr     reconstruction on the test split (dB)
    ssim     reconstruction on the test split
    img_s    training images/s (of the last run that added steps)
    g_l1     G's L1 term, mean of the last training steps (every loss term: the
             dvclive curves and train.json)

Ten columns or more would not fit 100 characters: `dvc metrics show` gives each
key its name's width + 4 (tests/test_inspect.py measures it on a real run).
"""
from __future__ import annotations

# key -> decimals kept: short values keep the table narrow.
DECIMALS = {"de": 2, "hit": 3, "swap": 3, "de_mean": 2, "de_own": 2, "psnr": 2, "ssim": 3,
            "img_s": 1, "g_l1": 4}
KEYS = tuple(DECIMALS)


def headline(evaluate: dict, train: dict) -> dict:
    """The flat headline from evaluate's full record and train's (train.json);
    a figure that could not be measured is null, never left out."""
    bench = evaluate.get("benchmark", {})
    recon = evaluate.get("reconstruction", {})
    loss = train.get("loss_final", {})
    raw = {
        "de": bench.get("model", {}).get("delta_e"),
        "hit": bench.get("model", {}).get("hit_rate"),
        "swap": evaluate.get("swap", {}).get("projection"),
        "de_mean": bench.get("mean_colour", {}).get("delta_e"),
        "de_own": bench.get("own_palette", {}).get("delta_e"),
        "psnr": recon.get("psnr"),
        "ssim": recon.get("ssim"),
        "img_s": train.get("images_per_s"),
        "g_l1": loss.get("g_l1"),
    }
    return {k: round(v, DECIMALS[k]) if isinstance(v, float) else v for k, v in raw.items()}
