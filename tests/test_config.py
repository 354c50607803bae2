"""params.yaml validation: every bad value fails early with one line naming the key."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
        ({"train": {"max_steps": None, "max_minutes": 5, "lr_decay": 0.5}}, "lr_decay=0.5 needs max_steps"),
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
        [sys.executable, "-m", "stages", "ingest"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: params.yaml: ")
    assert "resolution=100" in proc.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"data": {"resolution": "64"}}, "data.resolution: Input should be a valid integer, got '64'"),
        ({"data": {"resolution": 64.0}}, "data.resolution: Input should be a valid integer, got 64.0"),
        ({"train": {"batch_size": True}}, "train.batch_size: Input should be a valid integer, got True"),
        ({"train": {"lr_g": float("inf")}}, "train.lr_g: Input should be a finite number, got inf"),
        ({"train": {"max_minutes": float("nan")}}, "train.max_minutes: Input should be a finite number"),
        ({"train": {"lr_g": "0.001"}}, "train.lr_g: Input should be a valid number, got '0.001'"),
        ({"train": {"flip": "yes"}}, "train.flip: Input should be a valid boolean, got 'yes'"),
        ({"train": {"amp": 1}}, "train.amp: Input should be a valid boolean, got 1"),
        ({"ingest": {"folder": 5}}, "ingest.folder: Input should be a valid string, got 5"),
    ],
)
def test_types_are_strict(raw, message):
    """No coercion: a value that is not already the right type is a typo."""
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert message in str(err.value)


def test_an_int_is_a_float_and_json_round_trips():
    cfg = parse_config({"train": {"lr_g": 1, "max_minutes": 2}})
    assert cfg.train.lr_g == 1.0 and isinstance(cfg.train.lr_g, float)
    # What torchrun workers and checkpoints read back must validate too.
    assert parse_config(json.loads(cfg.model_dump_json())) == cfg


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: {batch_size: 2}\ntrain: {seed: 1}\n", "duplicate key 'train' at line 2"),
        ("data:\n  resolution: 64\n  resolution: 32\n", "duplicate key 'resolution' at line 3"),
        ("", "empty file"),
        ("# nothing but a comment\n", "empty file"),
        ("- data\n", "top level must be a mapping"),
        ("train: {lr_g: .inf}\n", "train.lr_g: Input should be a finite number"),
        ("train: {batch_size: 1e3}\n", "train.batch_size: Input should be a valid integer, got '1e3'"),
    ],
)
def test_params_text_is_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_unusable_params_paths_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="is a folder, not a params file"):
        load_config(tmp_path)
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(b"data: {root: caf\xe9}\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 16\)"):
        load_config(latin)
    good = tmp_path / "params.yaml"
    good.write_text((REPO / "params.yaml").read_text())

    def unreadable(self, *args, **kwargs):  # root reads anything: pretend we are not root
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", unreadable)
    with pytest.raises(ConfigError, match=r"params.yaml: unreadable \(Permission denied\)"):
        load_config(good)


def test_params_yaml_holds_the_defaults_of_pipeline_config():
    """pipeline/config.py is the one source of defaults; params.yaml mirrors it."""
    from pipeline.params_file import differing_defaults

    differ = differing_defaults(REPO / "params.yaml")
    assert not differ, (
        "params.yaml and pipeline/config.py disagree (key: (default, params.yaml)): "
        f"{differ}; change the default in pipeline/config.py, then run "
        "`python -m pipeline.params_file --sync-defaults params.yaml`")


def test_sync_defaults_writes_the_defaults_and_keeps_comments(tmp_path):
    from pipeline.config import Config
    from pipeline.params_file import apply_overrides, differing_defaults, main

    params = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    params.write_text(text)
    defaults = Config()
    count, steps = defaults.ingest.toon_count, defaults.train.max_steps
    apply_overrides(params, {"ingest.toon_count": count + 7, "train.max_steps": steps + 7})
    assert differing_defaults(params) == {"ingest.toon_count": (count, count + 7),
                                          "train.max_steps": (steps, steps + 7)}
    assert main(["--sync-defaults", str(params)]) == 0
    assert params.read_text() == text  # values back, every comment where it was
    assert differing_defaults(params) == {}
