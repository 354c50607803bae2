"""The pipeline flow: `dvc repro` as a Prefect flow, for deployments and schedules.

dvc.yaml stays the one DAG. This flow never re-declares it: it asks DVC to
reproduce the whole pipeline or named stages (plus whatever they depend on),
optionally `dvc pull`s first and `dvc push`es after (the remote is checked
before anything else), and publishes what DVC did as a Prefect markdown
artifact, also when a DVC command fails: one row per stage (ran / skipped /
restored from the run-cache, with wall seconds), the headline metrics from
`dvc metrics show --json`, the stage flow runs it started (tagged with its run
id, see stages/common.py) and, on failure, DVC's whole error and the last lines
of its output.

Parameter overrides are written into params.yaml in place, as
`dvc exp run -S key=value` does in the workspace, so that params.yaml,
dvc.lock and the outputs agree afterwards and a plain `dvc repro` is a no-op.
(`dvc exp run` itself is not used: it needs a git commit, which a deployment's
working copy may not have, and it would record a git ref per run.) Comments and
layout of params.yaml are kept (ruamel round trip); the result is validated
against `Config` before anything is written or run.

Every DVC call is the DVC CLI in a subprocess, run by the flow's own Python
(`python -m dvc`), with that interpreter's bin folder first on PATH so the
`python` in the stage commands is the same environment.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from prefect import flow, get_run_logger, task
from prefect.context import get_run_context
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from pipeline.config import DASK_ADDRESS_ENV, ConfigError, TaskRunnerConfig, load_config
from pipeline.logs import PIPELINE_RUN_ENV, pipeline_tag
from pipeline.params_file import apply_overrides

ARTIFACT_KEY = "s2p-pipeline"
LOG_TAIL_LINES = 40  # of a failed DVC call, in the artifact

# DVC's own progress lines (dvc/stage/run.py, dvc/stage/__init__.py, dvc/stage/cache.py).
_STAGE_EVENTS = [
    (re.compile(r"^Running stage '(?P<stage>[^']+)':"), "ran"),
    (re.compile(r"^Stage '(?P<stage>[^']+)' didn't change, skipping"), "skipped"),
    (re.compile(r"^Stage '(?P<stage>[^']+)' is cached - skipping run"), "restored"),
]


@dataclass
class StageTiming:
    stage: str
    status: str  # ran | skipped | restored
    seconds: float


@dataclass
class DvcCall:
    args: list[str]
    returncode: int
    lines: list[tuple[float, str]]  # (seconds since start, line)
    seconds: float

    def error_text(self) -> str:
        """DVC's whole error: from its last ERROR line to the end of its output
        (DVC wraps a message over several lines), joined into one line."""
        text = [line.strip() for _, line in self.lines]
        starts = [i for i, line in enumerate(text) if line.startswith("ERROR")]
        if starts:
            return " ".join(line for line in text[starts[-1]:] if line)
        tail = [line for line in text if line]
        return tail[-1] if tail else "(no output)"

    def failed_stage(self) -> Optional[str]:
        """The stage DVC was running when it stopped, if any."""
        running = [m["stage"] for _, line in self.lines
                   if (m := _STAGE_EVENTS[0][0].match(line.strip()))]
        return running[-1] if running else None

    def tail(self, count: int = LOG_TAIL_LINES) -> list[str]:
        return [line for _, line in self.lines if line.strip()][-count:]


class DvcFailed(RuntimeError):
    """A DVC command exited non-zero; carries the call for the run's artifact."""

    def __init__(self, call: DvcCall):
        self.call = call
        super().__init__(f"dvc {' '.join(call.args)} failed (exit {call.returncode}): "
                         f"{call.error_text()}")


# --- pure helpers (unit-tested) ------------------------------------------------


def stage_timings(lines: Iterable[tuple[float, str]], end: float) -> list[StageTiming]:
    """Per-stage wall time from DVC's progress lines.

    A stage's time runs from its "Running stage" (or "is cached") line to the
    next stage's line, or to the end of `dvc repro`, so it includes DVC
    hashing and caching the stage's outs, which is part of what the stage costs.
    """
    events: list[tuple[float, str, str]] = []
    for t, line in lines:
        for pattern, status in _STAGE_EVENTS:
            match = pattern.match(line.strip())
            if match:
                events.append((t, match["stage"], status))
                break
    timings = []
    for i, (t, stage, status) in enumerate(events):
        until = events[i + 1][0] if i + 1 < len(events) else end
        seconds = 0.0 if status == "skipped" else max(0.0, until - t)
        timings.append(StageTiming(stage, status, round(seconds, 3)))
    return timings


def flatten_metrics(shown: dict) -> tuple[list[tuple[str, str, Any]], list[str], list[str]]:
    """`dvc metrics show --json` -> ([(file, metric, value)], [error lines], [missing files]).

    A missing file is a stage not run yet (normal when only some stages are
    targeted); any other error (e.g. unparsable JSON) is worth a warning.
    """
    rows: list[tuple[str, str, Any]] = []
    errors: list[str] = []
    missing: list[str] = []
    # The workspace is keyed "workspace", or "" in a repo without commits.
    workspace = shown.get("workspace", shown.get("", {}))
    if "error" in workspace:
        errors.append(f"metrics: {_error_text(workspace['error'])}")
    for path, entry in sorted((workspace.get("data") or {}).items()):
        if "error" in entry:
            if isinstance(entry["error"], dict) and entry["error"].get("type") == "FileNotFoundError":
                missing.append(path)
            else:
                errors.append(f"{path}: {_error_text(entry['error'])}")
            continue

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), sub)
            else:
                rows.append((path, prefix, value))

        walk("", entry.get("data") or {})
    return rows, errors, missing


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        return str(err.get("msg") or err.get("type") or err)
    return str(err)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.6g}"
    elif isinstance(value, (list, dict)):
        value = json.dumps(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def report_markdown(
    targets: list[str],
    changes: list[str],
    steps: list[tuple[str, float]],
    timings: list[StageTiming],
    metrics: list[tuple[str, str, Any]],
    metric_errors: list[str],
    metric_missing: list[str] = (),
    failure: Optional[DvcCall] = None,
    runs: list[tuple[str, str, str]] = (),
) -> str:
    out = ["# Pipeline run", ""]
    if failure is not None:
        stage = failure.failed_stage()
        out += [f"**Failed**: `dvc {' '.join(failure.args)}` exited {failure.returncode}"
                + (f" in stage `{stage}`" if stage else "") + ".", "",
                f"> {_cell(failure.error_text())}", "",
                f"Last {len(failure.tail())} lines of its output:", "", "~~~~"]
        out += failure.tail()
        out += ["~~~~", ""]
    out.append(f"Targets: {', '.join(targets) if targets else 'all stages (dvc.yaml)'}")
    if changes:
        out += ["", "Parameter overrides written to params.yaml:", ""]
        out += [f"- `{c}`" for c in changes]
    out += ["", "## Steps", "", "| step | seconds |", "|---|---:|"]
    out += [f"| {_cell(name)} | {secs:.1f} |" for name, secs in steps]
    out += ["", "## Stages (dvc repro)", "", "| stage | status | seconds |", "|---|---|---:|"]
    out += [f"| {_cell(t.stage)} | {t.status} | {t.seconds:.1f} |" for t in timings]
    if not timings:
        out.append("| (none) | | |")
    out += ["", "## Metrics (dvc metrics show)", "", "| file | metric | value |", "|---|---|---:|"]
    out += [f"| {_cell(f)} | {_cell(m)} | {_cell(v)} |" for f, m, v in metrics]
    if not metrics:
        out.append("| (none) | | |")
    if metric_missing:
        out += ["", f"Not produced yet: {', '.join(metric_missing)}"]
    if runs:
        out += ["", "## Stage flow runs (Prefect)", "", "| flow | state | run |", "|---|---|---|"]
        out += [f"| {_cell(name)} | {_cell(state)} | {link} |" for name, state, link in runs]
    if metric_errors:
        out += ["", "Metrics files that could not be read:", ""]
        out += [f"- {_cell(e)}" for e in metric_errors]
    return "\n".join(out) + "\n"


# --- DVC calls -----------------------------------------------------------------


# A stage's own log line ("12:00:01 WARNING s2p.x: ...", pipeline/logs.py) or
# Prefect's ("12:00:01.234 | WARNING | prefect.x - ..."): its clock and its level.
_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d(?:\.\d+)? (?:\| )?"
                       r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*(?:\| )?(?P<rest>.*)$")
_DVC_LEVEL = re.compile(r"^(?P<level>WARNING|ERROR):\s")


def relog(logger, line: str) -> None:
    """Log a line of DVC's output at the level it was written with, without the
    stage's own timestamp (Prefect adds one)."""
    level, text = logging.INFO, line
    match = _LOG_LINE.match(line)
    if match:
        level, text = logging.getLevelName(match["level"]), match["rest"]
    elif (dvc := _DVC_LEVEL.match(line)):
        level = logging.getLevelName(dvc["level"])
    logger.log(level, "%s", text)


def _dvc_env(dask_address: str | None) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"  # stage logs reach us (and Prefect's log) as they happen
    if dask_address:
        env[DASK_ADDRESS_ENV] = dask_address
    return env


def run_dvc(args: list[str], repo: Path, env: dict[str, str], logger=None) -> DvcCall:
    """Run `python -m dvc ARGS` in `repo`, streaming and timestamping its output."""
    cmd = [sys.executable, "-m", "dvc", *args]
    start = time.monotonic()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append((time.monotonic() - start, line))
            if logger is not None and line.strip():
                relog(logger, line)
        returncode = proc.wait()
    return DvcCall(args, returncode, lines, time.monotonic() - start)


def _check(call: DvcCall) -> DvcCall:
    if call.returncode != 0:
        raise DvcFailed(call)
    return call


def check_remote(repo: Path, remote: Optional[str]) -> str:
    """The remote that `dvc pull`/`dvc push` will use, checked before any work:
    a missing one is one line naming the fix (ConfigError)."""
    listed = run_dvc(["remote", "list"], repo, _dvc_env(None))
    names = [line.split()[0] for _, line in listed.lines if line.strip()]
    if remote is not None:
        if remote not in names:
            raise ConfigError(f"remote={remote!r}: no such DVC remote in {repo} "
                              f"(remotes: {', '.join(names) or 'none'})")
        return remote
    default = run_dvc(["remote", "default"], repo, _dvc_env(None))
    name = " ".join(line for _, line in default.lines).strip()
    if default.returncode != 0 or not name or name not in names:
        raise ConfigError(
            f"pull/push asked but {repo} has no default DVC remote: run `make remote` "
            "(or scripts/dvc_remote.sh URL) there first, or pass remote=<name>")
    return name


def dvc_stage_names(repo: Path) -> list[str]:
    dvc_yaml = repo / "dvc.yaml"
    try:
        doc = yaml.safe_load(dvc_yaml.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{dvc_yaml}: file not found (is {repo} the project root?)") from None
    return list((doc.get("stages") or {}).keys())


# DVC calls have side effects on the workspace: never cache them across runs.
@task(name="dvc-pull", cache_policy=NO_CACHE)
def dvc_pull(repo: str, targets: list[str], remote: Optional[str], run_cache: bool) -> float:
    # --allow-missing: a remote that lacks some outs (e.g. first run) is fine,
    # `dvc repro` rebuilds whatever is still missing.
    args = ["pull", "--allow-missing", *(["--run-cache"] if run_cache else [])]
    args += ["-r", remote] if remote else []
    args += ["--with-deps", *targets] if targets else []
    return _check(run_dvc(args, Path(repo), _dvc_env(None), get_run_logger())).seconds


@task(name="dvc-repro", cache_policy=NO_CACHE)
def dvc_repro(
    repo: str, targets: list[str], force: bool, dask_address: Optional[str],
    pipeline_run: Optional[str] = None,
) -> list[StageTiming]:
    args = ["repro", *(["--force"] if force else []), *targets]
    env = _dvc_env(dask_address)
    if pipeline_run:  # each stage tags its flow run with it (stages/common.py)
        env[PIPELINE_RUN_ENV] = pipeline_run
    call = _check(run_dvc(args, Path(repo), env, get_run_logger()))
    return stage_timings(call.lines, call.seconds)


def stage_runs(pipeline_run: str) -> list[tuple[str, str, str]]:
    """(stage flow name, state, link or id) of the stage flow runs that this
    pipeline run started: they carry its tag (stages/common.py)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_UI_URL

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[pipeline_tag(pipeline_run)])),
            sort=FlowRunSort.START_TIME_ASC)
        names = {f.id: f.name for f in client.read_flows()} if runs else {}
    ui = PREFECT_UI_URL.value()
    return [(names.get(r.flow_id, "?"), r.state_name or "?",
             f"[{r.name}]({ui}/runs/flow-run/{r.id})" if ui else str(r.id)) for r in runs]


@task(name="dvc-push", cache_policy=NO_CACHE)
def dvc_push(repo: str, targets: list[str], remote: Optional[str], run_cache: bool) -> float:
    args = ["push", *(["--run-cache"] if run_cache else [])]
    args += ["-r", remote] if remote else []
    args += ["--with-deps", *targets] if targets else []
    return _check(run_dvc(args, Path(repo), _dvc_env(None), get_run_logger())).seconds


@task(name="dvc-metrics", cache_policy=NO_CACHE)
def dvc_metrics(repo: str) -> dict:
    # stdout alone: DVC's warnings go to stderr and must not break the JSON.
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=repo,
        env=_dvc_env(None), capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"dvc metrics show failed (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


# --- the flow ------------------------------------------------------------------


def dask_address_users(cfg) -> list[str]:
    """The params sections whose runner is `dask_address`; at least one, or a
    `dask_address` given to the flow would be ignored."""
    users = [
        name for name in type(cfg).model_fields
        if isinstance(getattr(getattr(cfg, name), "runner", None), TaskRunnerConfig)
        and getattr(cfg, name).runner.kind == "dask_address"
    ]
    if not users:
        raise ConfigError(
            "dask_address given but no stage has runner.kind: dask_address in params.yaml "
            "(add e.g. overrides {'extract.runner.kind': 'dask_address'})"
        )
    return users


def _run_dvc(root: Path, targets, pull, push, remote, run_cache, force, dask_address,
             retries, run_id):
    """dvc pull / repro / push in order; returns (steps, stage timings, the failed
    call or None): a failure stops the sequence but not the report."""
    steps: list[tuple[str, float]] = []
    timings: list[StageTiming] = []
    failure: Optional[DvcCall] = None
    try:
        if pull:
            steps.append(("dvc pull", dvc_pull(str(root), targets, remote, run_cache)))
        t0 = time.monotonic()
        timings = dvc_repro.with_options(retries=retries)(str(root), targets, force,
                                                           dask_address, run_id)
        steps.append(("dvc repro", time.monotonic() - t0))
        if push:
            steps.append(("dvc push", dvc_push(str(root), targets, remote, run_cache)))
    except DvcFailed as err:
        failure = err.call
        steps.append((f"dvc {failure.args[0]} (failed)", failure.seconds))
        if failure.args[0] == "repro":
            timings = stage_timings(failure.lines, failure.seconds)
    return steps, timings, failure


def _report(root: Path, targets, changes, steps, timings, failure, run_id) -> list:
    """Log the metrics and write the run's markdown artifact (on failure too);
    returns the flattened metrics."""
    logger = get_run_logger()
    try:
        metrics, metric_errors, metric_missing = flatten_metrics(dvc_metrics(str(root)))
    except RuntimeError as err:  # the artifact is still written
        metrics, metric_errors, metric_missing = [], [str(err)], []
    for err in metric_errors:
        logger.warning("%s", err)
    if metric_missing:
        logger.info("metrics not produced yet: %s", ", ".join(metric_missing))
    markdown = report_markdown(targets, changes, steps, timings, metrics, metric_errors,
                               metric_missing, failure, stage_runs(run_id))
    create_markdown_artifact(
        markdown=markdown, key=ARTIFACT_KEY, description="dvc repro: stage durations and metrics"
    )
    return metrics


@flow(name="pipeline")
def pipeline_flow(
    stages: Optional[list[str]] = None,
    overrides: Optional[dict[str, Any]] = None,
    pull: bool = False,
    push: bool = False,
    run_cache: bool = False,
    dask_address: Optional[str] = None,
    remote: Optional[str] = None,
    force: bool = False,
    retries: int = 0,
    repo: Optional[str] = None,
) -> dict:
    """Reproduce the DVC pipeline (all stages, or `stages` and their upstream).

    overrides: {"section.key": value} written into params.yaml first (validated).
    pull / push: `dvc pull` before and `dvc push` after (default remote or `remote`).
    run_cache: pull/push DVC's run-cache too, so another machine restores stage
      results from it ("is cached - skipping run") without a committed dvc.lock.
    dask_address: scheduler address exported as $S2P_DASK_ADDRESS to the stages;
      used by stages whose `<stage>.runner.kind` is `dask_address`.
    retries: Prefect retries of the `dvc repro` task (DVC skips finished stages).
    repo: project root; default the working directory (set by the deployment).
    """
    logger = get_run_logger()
    root = Path(repo or os.getcwd()).resolve()
    targets = list(stages or [])
    known = dvc_stage_names(root)
    unknown = [s for s in targets if s not in known]
    if unknown:
        raise ConfigError(f"{root / 'dvc.yaml'}: no stage {unknown[0]!r} (stages: {', '.join(known)})")

    if pull or push:  # before any work: a run that cannot push should not build first
        logger.info("DVC remote: %s", check_remote(root, remote))

    changes = apply_overrides(root / "params.yaml", overrides or {})
    for change in changes:
        logger.info("params.yaml: %s", change)
    if dask_address:
        users = dask_address_users(load_config(root / "params.yaml"))
        logger.info("Dask scheduler %s for stage(s): %s", dask_address, ", ".join(users))

    run_id = str(get_run_context().flow_run.id)
    steps, timings, failure = _run_dvc(root, targets, pull, push, remote, run_cache, force,
                                       dask_address, retries, run_id)
    metrics = _report(root, targets, changes, steps, timings, failure, run_id)
    if failure is not None:
        raise DvcFailed(failure)
    ran = [t.stage for t in timings if t.status != "skipped"]
    logger.info("dvc repro finished: %s", ", ".join(ran) if ran else "nothing to do")
    return {
        "targets": targets,
        "overrides": changes,
        "steps": {name: round(secs, 3) for name, secs in steps},
        "stages": [asdict(t) for t in timings],
        "metrics": [{"file": f, "metric": m, "value": v} for f, m, v in metrics],
    }


if __name__ == "__main__":
    # `python flows/repro.py [stage ...]`: the same flow without a deployment.
    pipeline_flow(stages=sys.argv[1:] or None)
