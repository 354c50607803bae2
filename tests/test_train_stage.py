"""The train stage end to end on tiny shards, through its Prefect flow."""
from __future__ import annotations

import json

import cv2
import pytest
import torch

from conftest import tiny_config
from pipeline.jsonio import write_json
from pipeline.models import load_generator
from pipeline.train.loop import cpu_has_bf16
from synthetic import write_fake_shards


pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_stage_end_to_end(tmp_path):
    from flows.train import train

    cfg = tiny_config(tmp_path, train={"max_steps": 5, "log_every": 2, "sample_every": 2,
                                       "checkpoint_every": 2, "num_workers": 1,
                                       "monitor_every": 2})
    root = cfg.data_root
    write_fake_shards(root, 24, 32, shard_rows=8, row_group_rows=4)
    write_json(root / "metrics/featurize.json", {"style_encoder": "random"})
    write_json(root / "metrics/extract.json", {"method_used": "classical"})

    metrics = train(cfg)

    saved = json.loads((root / "metrics/train.json").read_text())
    assert saved == metrics
    assert metrics["steps"] == 5 and metrics["device"] == "cpu"
    assert metrics["style_encoder"] == "random" and metrics["extractor"] == "classical"
    assert metrics["images_per_s"] > 0
    assert metrics["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert set(metrics["loss_final"]) >= {"g_l1", "g_guide_grey", "g_guide_colour",
                                          "g_adversarial", "d_real", "d_fake"}
    G, meta = load_generator(root / "models/generator.pt")
    assert meta["resolution"] == 32 and meta["style_encoder"] == "random"
    assert meta["extractor"] == "classical" and meta["train"]["steps"] == 5
    with torch.no_grad():
        out = G(torch.ones(1, 1, 32, 32), torch.rand(1, 4096))
    assert out.shape == (1, 3, 32, 32)

    curves = root / "train/dvclive/plots/metrics"
    for name in ("loss/g_l1", "loss/d_total", "lr/g", "images_per_s", "monitor/swap/all",
                 "monitor/delta_e/all", "monitor/delta_e/background", "monitor/hit_rate"):
        rows = [r.split("\t") for r in (curves / f"{name}.tsv").read_text().splitlines()]
        assert rows[0] == ["step", name.split("/")[-1]]
        assert [int(r[0]) for r in rows[1:]] == [2, 4, 5], name  # every log_every + the end
    # The monitor's last scores are the train metrics' too.
    assert set(metrics["monitor_final"]) >= {"swap/all", "delta_e/all", "hit_rate", "delta_e/hair"}
    last = (curves / "monitor/delta_e/all.tsv").read_text().splitlines()[-1].split("\t")
    assert float(last[1]) == pytest.approx(metrics["monitor_final"]["delta_e/all"])
    samples = sorted(p.name for p in (root / "train/samples").glob("*.png"))
    assert samples == ["grid_latest.png", "grid_step000001.png", "grid_step000002.png",
                       "grid_step000004.png", "grid_step000005.png"]
    grid = cv2.imread(str(root / "train/samples/grid_latest.png"))
    assert grid.shape == (6 * 32 + 5 * 2, 4 * 32 + 3 * 2, 3)
    assert (root / "train/checkpoints/latest.pt").is_file()


def test_train_stage_rejects_missing_shards(tmp_path):
    from pipeline.train.loader import DataError
    from pipeline.train.loop import train

    cfg = tiny_config(tmp_path)
    with pytest.raises(DataError, match="shards/color"):
        train(cfg)


def test_train_stage_entry_names_the_missing_stage(tmp_path):
    from flows.train import train
    from pipeline.config import ConfigError

    cfg = tiny_config(tmp_path)
    write_fake_shards(cfg.data_root, 8, 32)
    (cfg.data_root / "shards/style/_manifest.json").unlink()
    with pytest.raises(ConfigError, match="featurize stage"):
        train(cfg)


def test_train_stage_turns_bad_shards_into_one_line(tmp_path):
    from flows.train import train
    from pipeline.config import ConfigError

    cfg = tiny_config(tmp_path)
    write_fake_shards(cfg.data_root, 8, 32, dim=64)  # codes of 64, model.style_dim 4096
    with pytest.raises(ConfigError, match="shards/style.*style_dim"):
        train(cfg)


@pytest.mark.parametrize("content", ["garbage", "malicious"])
def test_unreadable_checkpoint_is_one_line_and_kept(tmp_path, content):
    """A damaged or unsafe latest.pt stops train with one complete line (exit 2
    through the stage script); the file is neither loaded nor replaced."""
    import os

    from flows.train import train
    from pipeline.config import ConfigError

    cfg = tiny_config(tmp_path)
    write_fake_shards(cfg.data_root, 8, 32)
    latest = cfg.data_root / "train/checkpoints/latest.pt"
    latest.parent.mkdir(parents=True)

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    if content == "garbage":
        latest.write_bytes(b"not a checkpoint, just bytes")
    else:
        torch.save({"format_version": 1, "G": Exploit()}, latest)
    before = latest.read_bytes()
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"train: {latest}: ")
    assert message.endswith("move it away to start training over")
    if content == "malicious":
        assert "refused: loading it would run Python code (posix.system)" in message
    assert latest.read_bytes() == before and not (tmp_path / "pwned").exists()
    assert not (cfg.data_root / "models").exists()
