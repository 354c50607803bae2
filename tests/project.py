"""A copy of this project as a fresh git repository with tiny params, for tests
that run DVC itself (`dvc repro`, `dvc exp run`, `dvc plots`, clone and pull)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import REPO, TINY

GIT = ["git", "-c", "user.name=s2p-test", "-c", "user.email=s2p@test.invalid"]


def run(cmd: list, timeout: float = 60, **kw) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def project_copy(dest: Path, stages: tuple[str, ...] = ()) -> Path:
    """The working tree as git sees it (tracked + untracked, minus ignored:
    no .venv, no data), with tiny params, in a fresh committed git repo."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # The project's params with TINY merged in, so every key dvc.yaml names exists.
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params.setdefault(section, {}).update(values)
    params["data"]["root"] = "data"
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], cwd=dest)
    run(["git", "add", "-A"], cwd=dest)
    run([*GIT, "commit", "-qm", "snapshot for the orchestration test"], cwd=dest)
    return dest


