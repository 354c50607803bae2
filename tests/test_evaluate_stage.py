"""The evaluate stage end to end on tiny params with a tiny random generator."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, tiny_config, tiny_generator

pytestmark = pytest.mark.slow
# The ephemeral Prefect API starts in a subprocess; a busy 2-core machine needs longer.


def write_dataset(cfg, n: int = 12) -> None:
    """Aligned colour/sketch/style shard sets of toon characters (every 3rd row is test)."""
    from pipeline import toon
    from pipeline.featurize import encoder_for
    from pipeline.images import encode_image
    from pipeline.shards import (COLOR_SCHEMA, SKETCH_SCHEMA, content_id, pixel_sha256,
                                 shard_name, write_manifest, write_shard)
    from pipeline.sketch import make_extractor
    from pipeline.shards import style_table
    import pyarrow as pa

    res, rows = cfg.data.resolution, cfg.data.row_group_rows
    chars = [toon.generate(seed, res) for seed in range(n)]
    sketches = make_extractor(cfg.extract).extract([c.image for c in chars])
    fz = cfg.featurize
    codes = encoder_for(fz).encode(np.stack([c.image for c in chars])).numpy()
    ids = [content_id(pixel_sha256(c.image)) for c in chars]
    colour = [{"id": i, "split": "test" if k % 3 == 0 else "train",
               "color": encode_image(c.image), "width": res, "height": res,
               "source": f"toon:{k}", "sha256": pixel_sha256(c.image),
               "mask": encode_image(c.mask), "palette": c.palette.to_json()}
              for k, (i, c) in enumerate(zip(ids, chars))]
    shards = cfg.data_root / "shards"
    name = shard_name(0)
    write_shard(shards / "color" / name, pa.Table.from_pylist(colour, schema=COLOR_SCHEMA), "color", rows)
    sk = [{"id": i, "sketch": encode_image(s)} for i, s in zip(ids, sketches)]
    write_shard(shards / "sketch" / name, pa.Table.from_pylist(sk, schema=SKETCH_SCHEMA), "sketch", rows)
    write_shard(shards / "style" / name, style_table(ids, codes, np.zeros((n, 0, codes.shape[1]))), "style", rows)
    for kind in ("color", "sketch", "style"):
        write_manifest(shards / kind, kind)
    (cfg.data_root / "metrics").mkdir(parents=True, exist_ok=True)
    (cfg.data_root / "metrics" / "extract.json").write_text(json.dumps({"method_used": "classical"}))
    (cfg.data_root / "metrics" / "train.json").write_text(json.dumps(
        {"images_per_s": 12.345, "loss_final": {"g_l1": 0.123456, "d_total": 0.69314, "g_total": 1.0}}))


def save_tiny_generator(cfg) -> None:
    from pipeline.models import save_generator

    extra = {"resolution": cfg.data.resolution, "style_encoder": "random",
             "featurize": cfg.featurize.model_dump(include={"code", "weights", "input_size",
                                                            "seed", "precision"})}
    save_generator(tiny_generator(cfg.model), cfg.model, cfg.data_root / "models" / "generator.pt",
                   extra)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
        yield


def test_evaluate_end_to_end(tmp_path, torch_home):
    from flows.evaluate import evaluate

    real = tmp_path / "real"
    (real / "sketch").mkdir(parents=True)
    (real / "color").mkdir()
    Image.fromarray(np.full((45, 30), 255, np.uint8)).save(real / "sketch" / "a.png")
    (real / "sketch" / "b.jpg").write_bytes(b"")  # a bad file is skipped, not fatal
    Image.fromarray(np.full((20, 20, 3), (200, 40, 90), np.uint8)).save(real / "color" / "r.jpg")
    cfg = tiny_config(tmp_path, extract={"method": "classical"},
                      evaluate={"pairs": 3, "grid_rows": 2, "device": "cpu",
                                "real_sketch_dir": str(real / "sketch"),
                                "real_reference_dir": str(real / "color")})
    write_dataset(cfg)
    save_tiny_generator(cfg)
    metrics = evaluate(cfg)

    root = cfg.data_root
    saved = json.loads((root / "metrics" / "evaluate.json").read_text())
    assert saved == metrics
    for method in ("model", "sketch", "mean_colour", "own_palette"):
        entry = saved["benchmark"][method]
        assert entry["delta_e"] > 0 and 0 <= entry["hit_rate"] <= 1
    assert saved["pairs"] == 3 and saved["extractor"] == "classical"
    assert saved["style_encoder"] == "random" and saved["benchmark_extractor"]["method_used"] == "classical"
    assert saved["style_encoder_weights"] == "random (seed 0)"
    assert set(saved["per_part"]) <= {"background", "skin", "hair", "eyes", "upper", "lower", "accessory"}
    assert "hair" in saved["per_part"] and "line" not in saved["per_part"]
    assert isinstance(saved["swap"]["projection"], float)
    recon = saved["reconstruction"]
    assert recon["images"] == 4 and recon["split"] == "test"
    assert 0 < recon["l1"] < 1 and 0 < recon["psnr"] < 100 and -1 <= recon["ssim"] <= 1
    assert saved["real_images"]["images"] == 1 and saved["real_images"]["failed"] == 1

    with open(root / "evaluate" / "per_part.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["part", "method", "mean_delta_e", "hit_rate", "label"]
    assert {r["method"] for r in rows} == {"model", "sketch", "mean_colour", "own_palette"}
    model_all = next(r for r in rows if r["part"] == "all" and r["method"] == "model")
    assert float(model_all["mean_delta_e"]) == pytest.approx(saved["benchmark"]["model"]["delta_e"], abs=1e-3)

    # The headline: the one DVC metrics file, flat and short (issue 11, items 1-2).
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary) == {"de", "hit", "swap", "de_mean", "de_own", "psnr", "ssim", "img_s",
                            "g_l1"}
    assert summary["de"] == round(saved["benchmark"]["model"]["delta_e"], 2)
    assert summary["de_mean"] == round(saved["benchmark"]["mean_colour"]["delta_e"], 2)
    assert summary["hit"] == round(saved["benchmark"]["model"]["hit_rate"], 3)
    assert summary["ssim"] == round(recon["ssim"], 3)
    assert (summary["img_s"], summary["g_l1"]) == (12.3, 0.1235)
    assert all(not isinstance(v, (dict, list)) for v in summary.values())
    with open(root / "evaluate" / "swap_per_part.csv") as fh:
        swaps = list(csv.DictReader(fh))
    assert swaps[-1]["part"] == "all"
    assert float(swaps[-1]["projection"]) == pytest.approx(saved["swap"]["projection"], abs=1e-3)
    assert [r["part"] for r in swaps[:-1]] == sorted(
        p for p, v in saved["swap"]["per_part"].items() if v["projection"] is not None)

    res = cfg.data.resolution
    with Image.open(root / "evaluate" / "grid.png") as grid:
        assert grid.size == (4 * res + 5 * 2, 2 * res + 3 * 2)  # 2 rows x 4 columns
    assert (root / "evaluate" / "real_grid.png").is_file()

    # Deterministic: a second run gives the same metrics, byte for byte.
    before = (root / "metrics" / "evaluate.json").read_bytes()
    swap_csv = (root / "evaluate" / "swap_per_part.csv").read_bytes()
    evaluate(cfg)
    assert (root / "metrics" / "evaluate.json").read_bytes() == before
    assert (root / "evaluate" / "swap_per_part.csv").read_bytes() == swap_csv



def test_real_images_skipped_with_reason(tmp_path):
    from flows.evaluate import real_images_task

    cfg = tiny_config(tmp_path, evaluate={"real_sketch_dir": None})
    out = tmp_path / "real_grid.png"
    assert real_images_task.fn(cfg, None, out) == "skipped (evaluate.real_sketch_dir is null)"
    assert Image.open(out).size[0] > 0  # DVC declares the plot: a placeholder says why
    cfg = tiny_config(tmp_path, evaluate={"real_sketch_dir": str(tmp_path / "absent")})
    assert "is not a folder" in real_images_task.fn(cfg, None, out)
    (tmp_path / "empty").mkdir()
    cfg = tiny_config(tmp_path, evaluate={"real_reference_dir": str(tmp_path / "empty")})
    if (REPO.parent / "shared" / "samples" / "real" / "sketch").is_dir():
        assert "no PNG/JPEG" in real_images_task.fn(cfg, None, out)


def test_stage_script_missing_checkpoint_is_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{root: {tmp_path / 'data'}, resolution: 32}}\nmodel: {{depth: 2}}\n")
    env = {**os.environ, "S2P_PARAMS": str(params), "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run([sys.executable, "-m", "stages", "evaluate"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: evaluate: ") and "generator.pt: not found" in last
