"""params.yaml validation: every bad value fails early with one line naming the key."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from pipeline.config import ConfigError, load_config, parse_config


def test_repo_params_yaml_is_valid():
    cfg = load_config(REPO / "params.yaml")
    assert cfg.data.resolution % 2 ** cfg.model.depth == 0


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"data": {"resolution": 100}}, "resolution=100 must be a multiple of 2**model.depth=8"),
        ({"train": {"lr_g": "fast"}}, "train.lr_g"),
        ({"train": {"bogus": 1}}, "train.bogus: unknown key"),
        ({"bogus_section": {}}, "bogus_section: unknown key"),
        ({"data": {"split": {"train": 0.9, "val": 0.2, "test": 0.1}}}, "data.split"),
        ({"extract": {"method": "magic"}}, "extract.method"),
        ({"ingest": {"source": "folder"}}, "ingest.folder must be set"),
        ({"train": {"max_steps": None, "max_minutes": None}}, "max_steps or max_minutes"),
        ({"ingest": {"toon_count": 20_000_000}}, "must not reach evaluate.seed"),
    ],
)
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    message = str(err.value)
    assert key in message
    assert "\n" not in message


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_stage_rejects_bad_params_before_work(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["resolution"] = 100
    params["data"]["root"] = str(tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "ingest.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: params.yaml: ")
    assert "resolution=100" in proc.stderr
    assert not (tmp_path / "data").exists()
