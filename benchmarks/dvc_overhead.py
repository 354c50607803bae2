"""What orchestration costs: DVC bookkeeping over many shards, and Prefect per stage.

  python benchmarks/dvc_overhead.py [--shards 400] [--repeats 3] [--api-url URL]

1. DVC: a temporary git+DVC repo whose three stages (color -> sketch, color ->
   style, like the real DAG) each write `--shards` small Parquet shards with
   `pipeline.shards.write_shard`. Times the first `dvc repro` (generation +
   hashing + caching), then `dvc status` and a no-op `dvc repro` (what every
   `make run` pays when nothing changed), against `dvc --version` (CLI start-up).
2. Prefect: wall time of a fresh Python process that runs a trivial flow, in
   ephemeral mode with a cold and a warm PREFECT_HOME (and against a running
   server with --api-url), against plain Python calling the same function.
   Each DVC stage command is such a process, so the difference is Prefect's
   overhead per stage.

Prints a markdown table (median of --repeats runs).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

GEN = """\
import sys
import zlib
import numpy as np
import pyarrow as pa
from pipeline.shards import shard_name, write_manifest, write_shard

name, count = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(zlib.crc32(name.encode()))
for i in range(count):
    rows = 8
    table = pa.table({
        "id": [f"{i:05d}-{r}" for r in range(rows)],
        name: [rng.integers(0, 255, 512, dtype=np.uint8).tobytes() for _ in range(rows)],
    })
    write_shard(f"data/shards/{name}/{shard_name(i)}", table, name, 4)
write_manifest(f"data/shards/{name}", name)
"""


def timed(cmd: list, cwd: Path | None = None, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def median_of(repeats: int, cmd: list, **kw) -> float:
    return statistics.median(timed(cmd, **kw) for _ in range(repeats))


def dvc_rows(tmp: Path, shards: int, repeats: int) -> list[tuple[str, float]]:
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "gen.py").write_text(GEN)
    (repo / "dvc.yaml").write_text(textwrap.dedent(f"""\
        stages:
          color:
            cmd: python gen.py color {shards}
            deps: [gen.py]
            outs: [data/shards/color]
          sketch:
            cmd: python gen.py sketch {shards}
            deps: [gen.py, data/shards/color]
            outs: [data/shards/sketch]
          style:
            cmd: python gen.py style {shards}
            deps: [gen.py, data/shards/color]
            outs: [data/shards/style]
        """))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([BIN / "dvc", "init", "-q"], cwd=repo, check=True, env=env)
    dvc = [sys.executable, "-m", "dvc"]
    first = timed([*dvc, "repro"], cwd=repo, env=env)
    files = sum(1 for _ in (repo / "data" / "shards").rglob("*.parquet"))
    assert files == 3 * shards, f"expected {3 * shards} shards, found {files}"
    label = f"3 x {shards} shards"
    return [
        ("dvc --version (CLI start-up)", median_of(repeats, [*dvc, "--version"], env=env)),
        (f"first dvc repro, {label} (generate + hash + cache)", first),
        (f"dvc status, {label}", median_of(repeats, [*dvc, "status"], cwd=repo, env=env)),
        (f"no-op dvc repro, {label}", median_of(repeats, [*dvc, "repro"], cwd=repo, env=env)),
    ]


TRIVIAL = "def double(x):\n    return 2 * x\n"
PLAIN = TRIVIAL + "double(21)\n"
FLOW = "from prefect import flow\n" + "@flow\n" + TRIVIAL + "double(21)\n"


def prefect_rows(tmp: Path, repeats: int, api_url: str | None) -> list[tuple[str, float]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    py = [sys.executable, "-c"]
    cold = []
    for i in range(repeats):
        # A new PREFECT_HOME each time: the ephemeral database is created and migrated.
        cold.append(timed([*py, FLOW], env={**env, "PREFECT_HOME": str(tmp / f"cold-{i}")}))
    warm_env = {**env, "PREFECT_HOME": str(tmp / "warm")}
    timed([*py, FLOW], env=warm_env)  # create the database once
    rows = [
        ("python: plain function call", median_of(repeats, [*py, PLAIN], env=env)),
        ("python: import prefect", median_of(repeats, [*py, "import prefect"], env=env)),
        ("prefect flow, ephemeral, cold PREFECT_HOME", statistics.median(cold)),
        ("prefect flow, ephemeral, warm PREFECT_HOME", median_of(repeats, [*py, FLOW], env=warm_env)),
    ]
    if api_url:
        rows.append((f"prefect flow, server {api_url}",
                     median_of(repeats, [*py, FLOW], env={**env, "PREFECT_API_URL": api_url})))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=400, help="shards per shard set")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--api-url", help="also time a flow against this Prefect API")
    parser.add_argument("--skip-dvc", action="store_true")
    parser.add_argument("--skip-prefect", action="store_true")
    args = parser.parse_args()

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="s2p-bench-") as tmp:
        if not args.skip_dvc:
            rows += dvc_rows(Path(tmp), args.shards, args.repeats)
        if not args.skip_prefect:
            prows = prefect_rows(Path(tmp), args.repeats, args.api_url)
            base = prows[0][1]
            rows += prows
            rows += [(f"Prefect overhead per stage ({name.split(', ', 1)[1]})", secs - base)
                     for name, secs in prows[2:]]
    print(f"\n| measurement (median of {args.repeats}) | seconds |\n|---|---:|")
    for name, secs in rows:
        print(f"| {name} | {secs:.2f} |")


if __name__ == "__main__":
    main()
