"""scripts/ablation_summary.py: a row holds the settings as they took effect and the
run's own figures."""
from __future__ import annotations

import importlib.util
import json

from conftest import REPO

spec = importlib.util.spec_from_file_location("ablation_summary",
                                              REPO / "scripts" / "ablation_summary.py")
ablation_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation_summary)


def test_a_key_set_twice_keeps_its_last_value():
    effective = ablation_summary.effective
    assert effective("train.max_steps=1000 data.resolution=128 train.max_steps=250") == \
        "data.resolution=128 train.max_steps=250"
    assert effective("") == ""


def test_the_row_is_read_from_the_metrics(tmp_path):
    (tmp_path / "evaluate.json").write_text(json.dumps({
        "swap": {"projection": 0.42, "per_part": {"hair": {"projection": 0.48, "count": 9}}},
        "benchmark": {"model": {"delta_e": 20.1, "hit_rate": 0.27},
                      "mean_colour": {"delta_e": 27.5, "hit_rate": 0.06}}}))
    (tmp_path / "train.json").write_text(json.dumps({"steps": 3000, "images_per_s": 58.7,
                                                     "train_seconds": 822.0}))
    row = ablation_summary.summary_row("x", "train.max_steps=1000 train.max_steps=3000", tmp_path)
    assert row["settings"] == "train.max_steps=3000" and row["steps"] == 3000
    assert row["swap"] == 0.42 and row["swap_hair"] == 0.48 and row["swap_lower"] is None
    assert row["train_minutes"] == 13.7
