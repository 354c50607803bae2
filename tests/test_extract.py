"""The extract stage: flow over a tiny colour shard set, alignment, resume, bad
rows, config errors and the Dask runner. Colour shards are written here (random
colourful images with dark outlines), independent of the ingest stage."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, tiny_config

import yaml

from flows.extract import extract
from flows.runner import shared_prefect_api
from pipeline.config import ConfigError
from pipeline.shards import (
    COLOR_SCHEMA,
    is_complete_shard,
    read_ids,
    read_manifest,
    shard_name,
    shard_paths,
    write_manifest,
    write_shard,
)

SIZE = 32


def _image(rng, size=SIZE):
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rng.integers(140, 256, 3)
    centre = tuple(int(v) for v in rng.integers(10, size - 10, 2))
    cv2.circle(img, centre, 7, tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    cv2.circle(img, centre, 7, (15, 15, 15), 1)
    return img


def _row(row_id, png, size=SIZE):
    return {"id": row_id, "split": "train", "color": png, "width": size, "height": size,
            "source": f"test:{row_id}", "sha256": row_id * 4, "mask": None, "palette": None}


def write_colour_set(root, shards=3, rows=5, bad_rows=None, seed=0):
    """A finished colour shard set; `bad_rows` maps (shard, row) -> bytes or (bytes, w, h)."""
    rng = np.random.default_rng(seed)
    folder = root / "shards" / "color"
    for s in range(shards):
        table = []
        for r in range(rows):
            png = cv2.imencode(".png", _image(rng)[..., ::-1])[1].tobytes()
            row = _row(f"{s:04x}{r:012x}", png)
            bad = (bad_rows or {}).get((s, r))
            if bad is not None:
                data, w, h = bad if isinstance(bad, tuple) else (bad, SIZE, SIZE)
                row.update(color=data, width=w, height=h)
            table.append(row)
        write_shard(folder / shard_name(s), pa.Table.from_pylist(table, schema=COLOR_SCHEMA),
                    "color", 4, fingerprint=f"colour-{seed}-{s}")
    write_manifest(folder, "color", {"source": "test"})
    return folder


def _sketches(path):
    table = pq.read_table(path)
    pngs = table.column("sketch").to_pylist()
    return table.column("id").to_pylist(), [
        cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for b in pngs]


def _metrics(cfg):
    return json.loads((cfg.data_root / "metrics" / "extract.json").read_text())


def test_extract_flow_writes_aligned_sketches_and_resumes(tmp_path):
    cfg = tiny_config(tmp_path, extract={"method": "auto", "weights": str(tmp_path / "absent.h5")})
    colour = write_colour_set(cfg.data_root)
    metrics = extract(cfg)

    sketch_dir = cfg.data_root / "shards" / "sketch"
    assert [p.name for p in shard_paths(sketch_dir)] == [p.name for p in shard_paths(colour)]
    for cpath in shard_paths(colour):
        ids, sketches = _sketches(sketch_dir / cpath.name)
        assert ids == read_ids(cpath)
        for sk in sketches:
            assert sk.dtype == np.uint8 and sk.shape == (SIZE, SIZE)
            assert sk.min() < 128 and np.median(sk) == 255  # dark outline on white paper
    manifest = read_manifest(sketch_dir)
    assert manifest["rows"] == 15 and manifest["method_used"] == "classical"
    assert metrics == _metrics(cfg)
    assert metrics["method_used"] == "classical" and metrics["classical"] == cfg.extract.classical
    assert (metrics["images"], metrics["rejects"], metrics["rejected_ids"]) == (15, 0, [])
    assert metrics["images_per_s"] > 0 and metrics["variant"] == "enhanced"

    # Resume: only the deleted shard is recomputed, identically.
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in shard_paths(sketch_dir)}
    (sketch_dir / shard_name(1)).unlink()
    (sketch_dir / shard_name(7)).write_bytes(b"from an earlier, larger colour set")
    (sketch_dir / f".{shard_name(2)}.tmp-999").write_bytes(b"left by a killed run")
    metrics = extract(cfg)
    assert sorted(p.name for p in sketch_dir.iterdir()) == ["_manifest.json"] + sorted(before)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in shard_paths(sketch_dir)}
    assert metrics["shards_skipped"] == 2 and metrics["images_this_run"] == 5
    assert metrics["images"] == 15
    for name in before:
        assert after[name][0] == before[name][0]
        assert (after[name][1] == before[name][1]) == (name != shard_name(1))

    # A shard made by another extractor is stale, even when complete.
    cfg2 = tiny_config(tmp_path, extract={"method": "classical", "classical": "xdog"})
    metrics = extract(cfg2)
    assert metrics["shards_skipped"] == 0 and metrics["classical"] == "xdog"


def test_bad_colour_rows_get_blank_sketches_and_are_recorded(tmp_path):
    cfg = tiny_config(tmp_path, extract={"method": "classical"})
    good_png = cv2.imencode(".png", np.zeros((SIZE, SIZE, 3), np.uint8))[1].tobytes()
    colour = write_colour_set(cfg.data_root, shards=2, rows=4, bad_rows={
        (0, 1): b"\x89PNG\r\n\x1a\n truncated garbage",
        (1, 3): (good_png, 40, 24),  # pixels disagree with the declared size
    })
    metrics = extract(cfg)
    bad_ids = [read_ids(shard_paths(colour)[0])[1], read_ids(shard_paths(colour)[1])[3]]
    assert metrics["rejects"] == 2 and metrics["rejected_ids"] == bad_ids
    assert metrics["images"] == 8
    ids0, sk0 = _sketches(cfg.data_root / "shards" / "sketch" / shard_name(0))
    assert ids0 == read_ids(shard_paths(colour)[0])
    assert sk0[1].shape == (SIZE, SIZE) and sk0[1].min() == 255
    assert sk0[0].min() < 128  # neighbours are unaffected
    _, sk1 = _sketches(cfg.data_root / "shards" / "sketch" / shard_name(1))
    assert sk1[3].shape == (24, 40) and sk1[3].min() == 255


def test_sketchkeras_without_weights_fails_before_any_work(tmp_path):
    cfg = tiny_config(tmp_path, extract={"method": "sketchkeras", "weights": str(tmp_path / "mod.h5")})
    write_colour_set(cfg.data_root, shards=1, rows=2)
    with pytest.raises(ConfigError, match="mod.h5 not found"):
        extract(cfg)
    assert not (cfg.data_root / "shards" / "sketch").exists()


def test_stage_script_reports_a_config_error_in_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{root: {tmp_path / 'data'}}}\n"
                      f"extract: {{method: sketchkeras, weights: {tmp_path / 'mod.h5'}}}\n")
    env = {**os.environ, "S2P_PARAMS": str(params)}
    proc = subprocess.run([sys.executable, "-m", "stages", "extract"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mod.h5 not found" in errors[0]


@pytest.mark.slow
def test_local_dask_runner_writes_the_same_bytes(tmp_path):
    runs = {}
    for kind in ("inprocess", "local_dask"):
        # One worker process: the test is about the task crossing a process
        # boundary (pickled config, extractor rebuilt in the worker), not speed.
        cfg = tiny_config(tmp_path / kind, extract={
            "method": "classical", "runner": {"kind": kind, "workers": 1, "threads_per_worker": 2}})
        write_colour_set(cfg.data_root, shards=2, rows=3)
        metrics = extract(cfg)
        assert metrics["images"] == 6
        sketch_dir = cfg.data_root / "shards" / "sketch"
        assert all(is_complete_shard(p, 3) for p in shard_paths(sketch_dir))
        runs[kind] = {p.name: p.read_bytes() for p in shard_paths(sketch_dir)}
    assert len(runs["inprocess"]) == 2 and runs["inprocess"] == runs["local_dask"]


@pytest.mark.slow
def test_dvc_repro_extract_end_to_end(tmp_path):
    """`dvc repro -s extract` in a scratch copy of the project on a tiny colour set."""
    work = tmp_path / "proj"
    for folder in ("stages", "flows", "pipeline"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    cfg = tiny_config(None, data={"root": "data"}, extract={"method": "auto"})
    (work / "params.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    write_colour_set(work / "data", shards=2, rows=2)
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("S2P_PARAMS", None)
    dvc = [str(REPO / ".venv" / "bin" / "dvc")]
    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=work, env=env, check=True)
    # The stage's own process reports to this session's Prefect server instead of
    # starting a second one (that alone would cost ~15 s here).
    with shared_prefect_api(True):
        from prefect.settings import PREFECT_API_URL

        env["PREFECT_API_URL"] = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
        proc = subprocess.run(dvc + ["repro", "-s", "extract"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((work / "data" / "metrics" / "extract.json").read_text())
    assert metrics["method_used"] == "classical" and metrics["images"] == 4
    assert (work / "dvc.lock").is_file()
    sketch_dir = work / "data" / "shards" / "sketch"
    assert [p.name for p in shard_paths(sketch_dir)] == [shard_name(0), shard_name(1)]
    again = subprocess.run(dvc + ["status", "extract"], cwd=work, env=env, capture_output=True, text=True)
    assert "up to date" in again.stdout.lower() or again.stdout.strip() == "", again.stdout
