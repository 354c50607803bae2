"""The layers and the DAG, checked from the source: which module imports which.

- Layers: `stages/` (DVC entry) -> `flows/` (Prefect) -> `pipeline/` (library).
  No import runs back up (the library knows no Prefect), and the import graph
  of the three packages has no loop.
- Each dvc.yaml stage's code deps are exactly the in-repo files its entry
  imports, transitively (function-level imports included), so a code change
  re-runs the stages it can affect and no other.

Imports are read with `ast` (nothing is imported), so the test is fast and
sees lazy imports inside functions too.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PACKAGES = ("stages", "flows", "pipeline")
LAYER = {"stages": 0, "flows": 1, "pipeline": 2}


@lru_cache(maxsize=1)
def module_files() -> dict[str, Path]:
    """Every module of the three packages -> its file."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imported_names(path: Path, module: str) -> set[str]:
    """Absolute names of what `path` imports: `from a import b` gives a.b when
    that is a module, else a."""
    modules = module_files()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                names.add(sub if sub in modules else base)
    return {n for n in names if n.split(".")[0] in PACKAGES and n in modules}


@lru_cache(maxsize=1)
def import_graph() -> dict[str, set[str]]:
    return {name: _imported_names(path, name) for name, path in module_files().items()}


def _with_parents(name: str) -> set[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def closure(roots: set[str]) -> set[str]:
    graph, seen, todo = import_graph(), set(), list(roots)
    while todo:
        for name in _with_parents(todo.pop()):
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
    return seen


def test_no_import_runs_up_a_layer():
    upward = [f"{a} imports {b}" for a, targets in import_graph().items() for b in targets
              if LAYER[b.split(".")[0]] < LAYER[a.split(".")[0]]]
    assert not upward, upward


def test_the_import_graph_has_no_loop():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    loops = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                loops.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not loops, loops


def test_import_graph_reader_sees_lazy_and_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipeline import shards\n    import flows.runner\n"
                      "from pipeline.sketch import process, resolve_method\n")
    assert _imported_names(module, "pipeline.m") == {
        "pipeline.shards", "flows.runner", "pipeline.sketch.process", "pipeline.sketch"}


def stage_roots(stage: str) -> set[str]:
    from stages.common import STAGES

    return {"stages.__main__", "stages.common",
            *(target.split(":")[0] for target in STAGES[stage])}


def declared_code_deps(stage: str) -> list[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return [d for d in spec["deps"] if d.split("/")[0] in PACKAGES]


def _covers(dep: str, file: str) -> bool:
    return file == dep or file.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("stage", ["ingest", "extract", "featurize", "train", "evaluate"])
def test_dvc_yaml_code_deps_are_exactly_what_the_stage_imports(stage):
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    assert spec["cmd"] == f"python -m stages {stage}"
    files = module_files()
    used = sorted(str(files[name].relative_to(REPO)) for name in closure(stage_roots(stage)))
    deps = declared_code_deps(stage)
    missing = [f for f in used if not any(_covers(d, f) for d in deps)]
    unused = [d for d in deps if not any(_covers(d, f) for f in used)]
    assert not missing, f"{stage}: imported but not in dvc.yaml deps: {missing}"
    assert not unused, f"{stage}: in dvc.yaml deps but never imported: {unused}"
