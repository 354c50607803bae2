"""Dask scaling curve: extract and featurize in process, on 1 and on 2 Dask workers.

    python benchmarks/dask_scaling.py --images 4000 --repeats 2

Ingests a folder of N real-format files once (benchmarks/scale.py writes it),
then for each runner runs the stages as DVC does (`python -m stages <stage>`,
own params file) on a fresh shard set of links to the same colour shards, in
interleaved rounds, and reports per stage and runner: images/s of the work
loop (from the stage's metrics; cluster start-up is outside it, worker
warm-up inside), the whole stage process's wall time, the speed-up over one
Dask worker and the ratio to the in-process run, and the per-task overhead:
1 - (seconds spent inside tasks) / (parallel slots x work-loop seconds).

Runners: `inprocess` (one task at a time, torch/OpenCV on every core),
`dask1` / `dask2` (local Dask cluster of 1 / 2 worker processes, one thread
each, `runner.threads_per_worker: 1`). On a real cluster run the same stages
with `runner.kind: dask_address` against schedulers of 1, 2, 4 ... workers
(README: "Scheduling and scale-out").
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import link_subset, make_folder, run_stage, write_params  # noqa: E402

RUNNERS = {
    "inprocess": {"kind": "inprocess", "workers": 1},
    "dask1": {"kind": "local_dask", "workers": 1},
    "dask2": {"kind": "local_dask", "workers": 2},
}


def runner_params(name: str) -> dict:
    return {**RUNNERS[name], "threads_per_worker": 1, "address": None}


def measure(stage: str, runner: str, root: Path, params: Path) -> dict:
    out = run_stage(stage, params, root / f"{stage}.log")
    metrics = json.loads((root / "data" / "metrics" / f"{stage}.json").read_text())
    images = metrics["images_this_run"] if stage == "extract" else metrics["images_computed"]
    rate = metrics["images_per_s"]
    work_seconds = images / rate
    slots = 1 if runner == "inprocess" else RUNNERS[runner]["workers"]
    return {"images": images, "images_per_s": rate, "wall_s": out["seconds"],
            "overhead": round(1 - metrics["task_seconds"] / (slots * work_seconds), 3),
            "peak_rss_mib": out["peak_rss_mib"], "worker_peaks_mib": out["worker_peaks_mib"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--distinct", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; medians")
    ap.add_argument("--stages", default="extract,featurize")
    ap.add_argument("--runners", default="inprocess,dask1,dask2")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/s2p-dask-scaling"))
    args = ap.parse_args()

    n, stages, runners = args.images, args.stages.split(","), args.runners.split(",")
    folder = args.workdir / f"folder-{n}"
    base = args.workdir / f"base-{n}"
    print(f"dask scaling: {n} files, stages {stages}, runners {runners}", flush=True)
    make_folder(folder, n, args.distinct)
    common = {"ingest.source": "folder", "ingest.folder": str(folder),
              "extract.method": "classical"}
    if not (base / "data" / "shards" / "color" / "_manifest.json").is_file():
        base.mkdir(parents=True, exist_ok=True)
        write_params(base / "params.yaml", {**common, "data.root": str(base / "data")})
        print("  ingest (in process, once) ...", flush=True)
        run_stage("ingest", base / "params.yaml", base / "ingest.log")

    runs: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(args.repeats):
        for runner in runners:
            root = args.workdir / "runs" / runner
            link_subset(base / "data" / "shards" / "color", root / "data", n)
            params = root / "params.yaml"
            overrides = {**common, "data.root": str(root / "data")}
            for stage in ("ingest", "extract", "featurize"):
                overrides[f"{stage}.runner"] = runner_params(runner)
            write_params(params, overrides)
            for stage in stages:
                got = measure(stage, runner, root, params)
                runs.setdefault((stage, runner), []).append(got)
                print(f"  round {round_ + 1} {stage:9s} {runner:9s} {got['images_per_s']:8.2f} "
                      f"images/s  wall {got['wall_s']:6.1f} s  overhead {got['overhead']:.1%}  "
                      f"workers {got['worker_peaks_mib']} MiB", flush=True)

    print(f"\n{'stage':9s} {'runner':9s} {'images/s':>9s} {'wall s':>7s} {'x dask1':>8s} "
          f"{'x inproc':>9s} {'overhead':>9s}")
    summary = {}
    for stage in stages:
        med = {r: statistics.median(x["images_per_s"] for x in runs[(stage, r)]) for r in runners}
        for runner in runners:
            got = runs[(stage, runner)]
            row = {"images_per_s": med[runner],
                   "wall_s": statistics.median(x["wall_s"] for x in got),
                   "overhead": statistics.median(x["overhead"] for x in got),
                   "vs_dask1": round(med[runner] / med["dask1"], 2) if "dask1" in med else None,
                   "vs_inprocess": (round(med[runner] / med["inprocess"], 2)
                                    if "inprocess" in med else None)}
            summary[f"{stage}/{runner}"] = row
            print(f"{stage:9s} {runner:9s} {row['images_per_s']:9.2f} {row['wall_s']:7.1f} "
                  f"{row['vs_dask1'] or float('nan'):8.2f} {row['vs_inprocess'] or float('nan'):9.2f} "
                  f"{row['overhead']:9.1%}")
    report = args.workdir / f"dask-scaling-{n}.json"
    report.write_text(json.dumps({"images": n, "cpu_count": os.cpu_count(), "repeats": args.repeats,
                                  "summary": summary,
                                  "runs": {f"{s}/{r}": v for (s, r), v in runs.items()}},
                                 indent=2))
    print(f"dask scaling: wrote {report}")


if __name__ == "__main__":
    main()
