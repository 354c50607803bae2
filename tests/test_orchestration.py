"""Pipeline flow, prefect.yaml and DVC remote: fast tests (real DVC, ephemeral Prefect)."""
from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from flows.repro import _dvc_env, flatten_metrics, pipeline_flow, report_markdown, stage_timings
from pipeline.config import ConfigError
from pipeline.params_file import apply_overrides, parse_overrides
from tests.conftest import REPO

BIN = Path(sys.executable).parent


# --- pure helpers ------------------------------------------------------------------


def test_stage_timings_follow_dvc_progress_lines():
    lines = [
        (0.1, "Stage 'ingest' didn't change, skipping"),
        (0.5, "Running stage 'extract':"),
        (0.6, "> python stages/extract.py"),
        (3.0, "Updating lock file 'dvc.lock'"),
        (3.5, "Stage 'featurize' is cached - skipping run, checking out outputs"),
        (4.0, "Running stage 'train':"),
        (9.0, "Use `dvc push` to send your updates to remote storage."),
    ]
    got = [(t.stage, t.status, t.seconds) for t in stage_timings(lines, end=10.0)]
    assert got == [
        ("ingest", "skipped", 0.0),
        ("extract", "ran", 3.0),
        ("featurize", "restored", 0.5),
        ("train", "ran", 6.0),
    ]
    assert stage_timings([(0.0, "Data and pipelines are up to date.")], 1.0) == []


def test_overrides_flatten_nested_and_reject_empty_keys():
    assert parse_overrides({"ingest": {"toon_count": 5}, "data.resolution": 64}) == {
        "ingest.toon_count": 5, "data.resolution": 64,
    }
    with pytest.raises(ConfigError, match="bad key"):
        parse_overrides({"ingest..toon_count": 5})


def test_apply_overrides_keeps_comments_and_validates(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_text()

    old = yaml.safe_load(before)
    count, batch = old["ingest"]["toon_count"] + 1, old["extract"]["batch_images"] + 1

    changes = apply_overrides(params, {"ingest.toon_count": count, "extract": {"batch_images": batch}})
    assert changes == [f"ingest.toon_count: {count - 1} -> {count}",
                       f"extract.batch_images: {batch - 1} -> {batch}"]
    text = params.read_text()
    raw = yaml.safe_load(text)
    assert raw["ingest"]["toon_count"] == count and raw["extract"]["batch_images"] == batch
    assert raw["model"] == old["model"]  # untouched sections stay as they were
    # Every comment line of the original survives the round trip.
    comments = [ln.split("#", 1)[1] for ln in before.splitlines() if "#" in ln]
    assert comments and all(c in text for c in comments)
    assert apply_overrides(params, {"ingest.toon_count": count}) == []  # already set: no change

    text = params.read_text()
    with pytest.raises(ConfigError, match=r"ingest\.nope: unknown key"):
        apply_overrides(params, {"ingest.nope": 1})
    with pytest.raises(ConfigError, match="data.resolution"):
        apply_overrides(params, {"data.resolution": 30})  # not a multiple of 2**depth
    assert params.read_text() == text  # a rejected override writes nothing


def test_metrics_flattened_with_errors_and_reported():
    shown = {"": {"data": {
        "data/metrics/a.json": {"data": {"n": 3, "timing": {"seconds": 1.5}, "method": "x|y"}},
        "data/metrics/b.json": {"error": {"type": "FileNotFoundError", "msg": "no b.json"}},
        "data/metrics/c.json": {"error": {"type": "JSONDecodeError", "msg": "bad c.json"}},
    }}}
    rows, errors, missing = flatten_metrics(shown)
    assert rows == [("data/metrics/a.json", "n", 3), ("data/metrics/a.json", "timing.seconds", 1.5),
                    ("data/metrics/a.json", "method", "x|y")]
    assert errors == ["data/metrics/c.json: bad c.json"]
    assert missing == ["data/metrics/b.json"]
    assert flatten_metrics({"workspace": shown[""]})[0] == rows

    md = report_markdown(["a"], ["a.k: 1 -> 2"], [("dvc repro", 2.0)],
                         stage_timings([(0.0, "Running stage 'a':")], 2.0), rows, errors, missing)
    assert "| a | ran | 2.0 |" in md
    assert "| data/metrics/a.json | timing.seconds | 1.5 |" in md
    assert "x\\|y" in md  # a pipe inside a value must not split the table row
    assert "- `a.k: 1 -> 2`" in md and "bad c.json" in md
    assert "Not produced yet: data/metrics/b.json" in md


def test_dvc_env_hands_the_dask_address_and_this_python_to_stages(monkeypatch):
    monkeypatch.delenv("S2P_DASK_ADDRESS", raising=False)
    env = _dvc_env("tcp://10.0.0.5:8786")
    assert env["S2P_DASK_ADDRESS"] == "tcp://10.0.0.5:8786"
    # `python` in dvc.yaml commands must be this interpreter's environment.
    assert env["PATH"].split(os.pathsep)[0] == str(BIN)
    assert "S2P_DASK_ADDRESS" not in _dvc_env(None)


# --- prefect.yaml ----------------------------------------------------------------


def test_prefect_yaml_deploys_the_pipeline_flow():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (dep,) = [d for d in spec["deployments"] if d["name"] == "pipeline-local"]
    path, func = dep["entrypoint"].split(":")
    assert (REPO / path).is_file() and func == "pipeline_flow"
    signature = inspect.signature(pipeline_flow.fn)
    assert set(dep["parameters"]) <= set(signature.parameters)
    for key, value in dep["parameters"].items():
        assert signature.parameters[key].default == (value if value != {} else None)
    assert dep["work_pool"]["name"] == "s2p-process"
    assert dep["concurrency_limit"] == 1
    (step,) = spec["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $S2P_REPO_DIR }}"
    assert [s["active"] for s in dep["schedules"]] == [False]
    assert pipeline_flow.name == "pipeline"  # `prefect deployment run pipeline/<name>`


# --- the flow on a toy DVC repo: overrides, pull/push round trip -------------------

TOY_STAGE = """\
import json, pathlib, yaml
seed = yaml.safe_load(open("params.yaml"))["ingest"]["seed"]
out = pathlib.Path("data/shards/{name}")
out.mkdir(parents=True, exist_ok=True)
src = {src}
for i in range(3):
    head = open(src / f"s{{i}}.bin", "rb").read() if src else b""
    (out / f"s{{i}}.bin").write_bytes((head + b"{name}%d-%d" % (i, seed)) * 50)
pathlib.Path("data/metrics").mkdir(parents=True, exist_ok=True)
json.dump({{"shards": 3, "seed": seed}}, open("data/metrics/{name}.json", "w"))
"""


def _toy_repo(root: Path) -> Path:
    """A git+DVC repo, the project's params.yaml and two cheap stages writing shard folders."""
    repo = root / "repo"
    (repo / "stages").mkdir(parents=True)
    (repo / "stages" / "a.py").write_text(TOY_STAGE.format(name="a", src="None"))
    (repo / "stages" / "b.py").write_text(TOY_STAGE.format(name="b", src='pathlib.Path("data/shards/a")'))
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    (repo / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          a:
            cmd: python stages/a.py
            deps: [stages/a.py]
            params: [ingest.seed]
            outs: [data/shards/a]
            metrics: [{data/metrics/a.json: {cache: false}}]
          b:
            cmd: python stages/b.py
            deps: [stages/b.py, data/shards/a]
            outs: [data/shards/b]
            metrics: [{data/metrics/b.json: {cache: false}}]
        """))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([BIN / "dvc", "init", "-q"], cwd=repo, check=True)
    return repo


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.bin"))}


def test_pipeline_flow_overrides_push_then_pull_round_trip(tmp_path):
    repo = _toy_repo(tmp_path)
    seed = yaml.safe_load((repo / "params.yaml").read_text())["ingest"]["seed"] + 1
    remote = tmp_path / "remote"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([REPO / "scripts" / "dvc_remote.sh", str(remote)], cwd=repo, env=env,
                   check=True, capture_output=True)
    assert '[\'remote "s2p"\']' in (repo / ".dvc" / "config").read_text()

    first = pipeline_flow(repo=str(repo), overrides={"ingest.seed": seed}, push=True)
    assert [(s["stage"], s["status"]) for s in first["stages"]] == [("a", "ran"), ("b", "ran")]
    assert all(s["seconds"] > 0 for s in first["stages"])
    assert set(first["steps"]) == {"dvc repro", "dvc push"}
    assert first["overrides"] == [f"ingest.seed: {seed - 1} -> {seed}"]
    assert {(m["file"], m["metric"], m["value"]) for m in first["metrics"]} == {
        ("data/metrics/a.json", "shards", 3), ("data/metrics/a.json", "seed", seed),
        ("data/metrics/b.json", "shards", 3), ("data/metrics/b.json", "seed", seed),
    }
    params_text = (repo / "params.yaml").read_text()
    assert yaml.safe_load(params_text)["ingest"]["seed"] == seed
    assert "# auto | sketchkeras | classical" in params_text  # comments kept
    shards = _snapshot(repo / "data" / "shards")
    assert len(shards) == 6 and len([p for p in remote.rglob("*") if p.is_file()]) >= 6

    # A fresh machine: no outputs, no cache. pull brings the pushed outputs back
    # and `dvc repro` then has nothing to do.
    shutil.rmtree(repo / "data" / "shards")
    shutil.rmtree(repo / ".dvc" / "cache")
    second = pipeline_flow(repo=str(repo), stages=["b"], pull=True)
    assert [(s["stage"], s["status"]) for s in second["stages"]] == [("a", "skipped"), ("b", "skipped")]
    assert set(second["steps"]) == {"dvc pull", "dvc repro"}
    assert _snapshot(repo / "data" / "shards") == shards


def test_pipeline_flow_rejects_bad_requests_before_running(tmp_path):
    repo = _toy_repo(tmp_path)
    with pytest.raises(ConfigError, match="no stage 'nope'"):
        pipeline_flow(repo=str(repo), stages=["nope"])
    with pytest.raises(ConfigError, match="no stage has runner.kind: dask_address"):
        pipeline_flow(repo=str(repo), dask_address="tcp://127.0.0.1:1")
    with pytest.raises(ConfigError, match=r"ingest\.nope: unknown key"):
        pipeline_flow(repo=str(repo), overrides={"ingest.nope": 1})
    assert not (repo / "dvc.lock").exists()  # nothing ran


def test_remote_script_names_missing_plugin(tmp_path):
    if importlib.util.find_spec("dvc_s3") is not None:
        pytest.skip("dvc-s3 is installed here")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([REPO / "scripts" / "dvc_remote.sh", "s3://bucket/s2p"], cwd=tmp_path,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "pip install dvc-s3" in proc.stderr


# --- issue 11: remote checked first, whole errors, artifacts on failure, stage tags ---


def test_push_without_a_remote_fails_before_any_work(tmp_path):
    repo = _toy_repo(tmp_path)
    params = (repo / "params.yaml").read_text()
    with pytest.raises(ConfigError, match=r"no default DVC remote: run `make remote`"):
        pipeline_flow(repo=str(repo), push=True, overrides={"ingest.seed": 5})
    assert (repo / "params.yaml").read_text() == params  # not even the overrides
    with pytest.raises(ConfigError, match=r"remote='nope': no such DVC remote"):
        pipeline_flow(repo=str(repo), pull=True, remote="nope")
    assert not (repo / "dvc.lock").exists() and not (repo / "data").exists()  # nothing ran


def test_failed_repro_keeps_dvcs_whole_error_and_writes_the_artifact(tmp_path):
    from prefect.client.orchestration import get_client

    from flows.repro import ARTIFACT_KEY, DvcFailed

    repo = _toy_repo(tmp_path)
    (repo / "stages" / "c.py").write_text(
        "import sys\nprint('c: the last words of a failing stage', flush=True)\nsys.exit(3)\n")
    with open(repo / "dvc.yaml", "a") as fh:
        fh.write("  c:\n    cmd: python stages/c.py\n    deps: [stages/c.py, data/shards/b]\n"
                 "    outs: [data/shards/c]\n")
    with pytest.raises(DvcFailed) as caught:
        pipeline_flow(repo=str(repo))
    message = str(caught.value)
    assert re.match(r"dvc repro failed \(exit \d+\): ERROR: failed to reproduce 'c'", message)
    assert "stages/c.py" in message and "exited with 3" in message, message  # not cut mid-sentence
    assert "\n" not in message
    with get_client(sync_client=True) as client:
        (artifact,) = [a for a in client.read_artifacts() if a.key == ARTIFACT_KEY
                       and "stages/c.py" in (a.data or "")][-1:]
    text = artifact.data
    assert re.search(r"\*\*Failed\*\*: `dvc repro` exited \d+ in stage `c`\.", text), text
    assert "c: the last words of a failing stage" in text  # the failed stage's log tail
    assert "| a | ran |" in text and "| c | ran |" in text  # what ran before it failed
    assert "| data/metrics/a.json | shards | 3 |" in text


def test_error_text_joins_dvcs_wrapped_message():
    from flows.repro import DvcCall

    call = DvcCall(["push"], 1, [(0.0, "Collecting"), (0.1, "ERROR: failed to push data to the "
                                 "cloud - config file error: no remote specified in"),
                                (0.1, "/repo/.dvc/config. Create a default remote with"),
                                (0.1, "    dvc remote add -d <remote name> <remote url>"),
                                (0.2, "")], 0.2)
    assert call.error_text() == (
        "ERROR: failed to push data to the cloud - config file error: no remote specified in "
        "/repo/.dvc/config. Create a default remote with dvc remote add -d <remote name> "
        "<remote url>")
    assert call.failed_stage() is None
    assert DvcCall(["repro"], 1, [(0.0, "x")], 0.0).error_text() == "x"


def test_stage_lines_relogged_at_their_level_with_one_timestamp():
    import logging

    from flows.repro import relog

    got = []

    class Recorder:
        def log(self, level, fmt, text):
            got.append((logging.getLevelName(level), text))

    for line in ("18:01:02 WARNING s2p.evaluate: sketches differ",
                 "18:01:02.123 | INFO    | Flow run 'x' - Finished in state Completed()",
                 "18:01:02.123 | ERROR   | Task run 'y' - boom",
                 "WARNING: some outputs are missing", "Running stage 'a':"):
        relog(Recorder(), line)
    assert got == [("WARNING", "s2p.evaluate: sketches differ"),
                   ("INFO", "Flow run 'x' - Finished in state Completed()"),
                   ("ERROR", "Task run 'y' - boom"),
                   ("WARNING", "WARNING: some outputs are missing"),
                   ("INFO", "Running stage 'a':")]


def test_progress_bars_never_glue_onto_log_lines_in_a_pipe():
    import io

    from tqdm import tqdm

    from pipeline.logs import LineProgress

    out = io.StringIO()
    stream = LineProgress(out)
    bar = tqdm(total=4, desc="extract", file=stream, mininterval=0)
    bar.update(2)
    stream.write("12:00:01 INFO s2p.extract: a log line\n")
    bar.update(2)
    bar.close()
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    assert "12:00:01 INFO s2p.extract: a log line" in lines, lines
    assert all(ln.startswith(("extract:", "12:00:01")) for ln in lines), lines


def test_throughput_says_reused_when_no_shard_was_made():
    from pipeline.logs import rate_text, throughput

    assert throughput(0, 3.0) == "reused" and rate_text("reused") == "all shards reused"
    assert throughput(50, 2.0) == 25.0 and rate_text(25.0) == "25.00 images/s"


def test_overrides_change_only_their_own_lines(tmp_path):
    """null values and everything else stay as written (issue 11, item 9)."""
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_text().splitlines()
    apply_overrides(params, {"ingest.toon_count": 7, "evaluate.labels": None})
    after = params.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 1, changed
    assert changed[0][1].strip().startswith("toon_count: 7")
    assert sum("null" in ln for ln in after) == sum("null" in ln for ln in before) >= 5


def test_stage_flow_runs_carry_the_pipeline_runs_tag(monkeypatch):
    from prefect.context import TagsContext

    from stages.common import _pipeline_tags

    monkeypatch.delenv("S2P_PIPELINE_RUN", raising=False)
    with _pipeline_tags():
        assert not any(t.startswith("pipeline-run:") for t in TagsContext.get().current_tags)
    monkeypatch.setenv("S2P_PIPELINE_RUN", "1234")
    with _pipeline_tags():
        assert {"pipeline-run:1234", "s2p-stage"} <= TagsContext.get().current_tags


def test_remote_script_records_a_relative_folder_as_absolute(tmp_path):
    repo = _toy_repo(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([REPO / "scripts" / "dvc_remote.sh", "../remote-store"], cwd=repo, env=env,
                   check=True, capture_output=True)
    config = (repo / ".dvc" / "config").read_text()
    assert f"url = {(tmp_path / 'remote-store').resolve()}" in config, config
