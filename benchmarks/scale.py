"""Dataset-size scaling: wall time, images/s and peak memory of each shard stage.

    python benchmarks/scale.py --images 10000
    python benchmarks/scale.py --images 100000 --featurize-subset 10000

1. Writes a folder of N real-format files (once; reused while its stamp says N):
   toon characters at 512, 640 and 768 px, 90% JPEG and 10% PNG, with 1% of
   them packed in zip and tar archives. Rendering a character costs ~0.1 s, so
   a pool of `--distinct` renders is reused and each file gets its own stamp
   (a coloured block whose place and colour come from its index): every file
   has different pixels, as in a real collection, and de-duplication has work.
2. Runs `python -m stages ingest`, `extract` (the classical extractor: no
   sketchKeras weights here) and `featurize` on it, each as its own process
   with its own params file (`S2P_PARAMS`), as DVC runs them, and samples the
   RSS of the stage process and of every child (Dask workers, Prefect's
   temporary API server) every 0.2 s.
3. Prints one row per stage and writes `<workdir>/scale-<N>.json`.

`--featurize-subset K` runs featurize on the first shards holding K images
(a shard set of links to the colour shards): VGG19 at ~40 images/s would take
40 minutes at 100k on 2 cores; memory per shard is what the subset measures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = (512, 640, 768)
PNG_EVERY = 10  # one file in ten is a PNG
ARCHIVE_EVERY = 100  # one file in a hundred goes into an archive
ARCHIVE_FILES = 50  # files per archive
STAMP = 24  # px


# ---------------------------------------------------------------- the folder


def make_folder(folder: Path, n: int, distinct: int) -> float:
    """Write the N-file folder (see module docstring); returns seconds taken,
    0 when a finished folder of this N is already there."""
    import cv2

    from pipeline import toon

    stamp = folder / ".scale-stamp"
    if stamp.is_file() and stamp.read_text() == f"{n} {distinct}":
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    pool = [toon.generate(1_000_000 + k, SIZES[k % len(SIZES)]).image[..., ::-1].copy()
            for k in range(distinct)]
    archive_members: list[tuple[str, bytes]] = []
    archives = 0
    for i in range(n):
        image = pool[i % distinct].copy()
        _stamp(image, i)
        png = i % PNG_EVERY == PNG_EVERY - 1
        ok, data = cv2.imencode(".png" if png else ".jpg", image,
                                [cv2.IMWRITE_PNG_COMPRESSION, 1] if png
                                else [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        name = f"{i // 1000:04d}/img-{i:07d}.{'png' if png else 'jpg'}"
        if i % ARCHIVE_EVERY == ARCHIVE_EVERY // 2:
            archive_members.append((name, data.tobytes()))
            if len(archive_members) == ARCHIVE_FILES:
                _write_archive(folder, archives, archive_members)
                archives, archive_members = archives + 1, []
            continue
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.tobytes())
        if i % 5000 == 4999:
            print(f"  folder: {i + 1}/{n} files", flush=True)
    if archive_members:
        _write_archive(folder, archives, archive_members)
    stamp.write_text(f"{n} {distinct}")
    return time.perf_counter() - started


def _stamp(image: np.ndarray, i: int) -> None:
    """A block whose place and colour encode i: unique pixels per file, even
    after ingest shrinks the picture to data.resolution."""
    h, w = image.shape[:2]
    cells_x = (w - STAMP) // STAMP
    y = (i // cells_x) % ((h - STAMP) // STAMP) * STAMP
    x = i % cells_x * STAMP
    image[y:y + STAMP, x:x + STAMP] = ((i * 37) % 256, (i * 101) % 256, (i * 7919) % 256)


def _write_archive(folder: Path, k: int, members: list[tuple[str, bytes]]) -> None:
    (folder / "archives").mkdir(parents=True, exist_ok=True)
    if k % 2 == 0:
        with zipfile.ZipFile(folder / "archives" / f"pack-{k:04d}.zip", "w") as zf:
            for name, data in members:
                zf.writestr(name, data)
        return
    import io

    with tarfile.open(folder / "archives" / f"pack-{k:04d}.tar", "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- the stages


def write_params(path: Path, overrides: dict) -> None:
    from pipeline.params_file import apply_overrides

    shutil.copyfile(REPO / "params.yaml", path)
    apply_overrides(path, overrides)


def link_subset(colour_dir: Path, subset_root: Path, images: int) -> int:
    """A colour shard set of links to the first shards holding `images` rows."""
    from pipeline.shards import shard_paths, write_manifest

    import pyarrow.parquet as pq

    target = subset_root / "shards" / "color"
    shutil.rmtree(subset_root, ignore_errors=True)
    target.mkdir(parents=True)
    rows = 0
    for path in shard_paths(colour_dir):
        if rows >= images:
            break
        (target / path.name).symlink_to(path)
        rows += pq.read_metadata(path).num_rows
    write_manifest(target, "color", {"source": "folder", "subset_of": str(colour_dir)})
    return rows


def role(proc) -> str:
    try:
        cmd = " ".join(proc.cmdline())
    except Exception:  # gone between listing and reading
        return "gone"
    if "prefect" in cmd and ("server" in cmd or "uvicorn" in cmd):
        return "prefect server"
    if "dask" in cmd or "multiprocessing" in cmd or "spawn" in cmd:
        return "worker"
    return "other child"


def run_stage(stage: str, params: Path, log: Path) -> dict:
    """Run one stage process; return wall time and peak RSS (MiB) of the stage
    process, of its largest worker, of the Prefect server, and of the tree."""
    import psutil

    # PYTHONPATH: this checkout's code, also in Dask's worker processes, whatever
    # checkout the venv's editable install points at.
    env = {**os.environ, "S2P_PARAMS": str(params), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(REPO),
           # each stage starts its own temporary Prefect server: give it time on a busy machine
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stages", stage], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        peaks = {"stage": 0.0, "worker": 0.0, "prefect server": 0.0, "tree": 0.0}
        workers: dict[int, float] = {}
        stop = threading.Event()

        def sample() -> None:
            root = psutil.Process(proc.pid)
            while not stop.is_set():
                try:
                    tree = [root, *root.children(recursive=True)]
                    total = 0.0
                    for p in tree:
                        mib = p.memory_info().rss / 2**20
                        total += mib
                        kind = "stage" if p.pid == proc.pid else role(p)
                        if kind == "worker":
                            workers[p.pid] = max(workers.get(p.pid, 0.0), mib)
                        if kind in peaks:
                            peaks[kind] = max(peaks[kind], mib)
                    peaks["tree"] = max(peaks["tree"], total)
                except psutil.Error:
                    pass
                stop.wait(0.2)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        code = proc.wait()
        stop.set()
        thread.join()
    if code != 0:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"{stage} failed (exit {code}); last lines of {log}:\n" + "\n".join(tail))
    return {"seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mib": {k: round(v) for k, v in peaks.items()},
            "worker_peaks_mib": sorted(round(v) for v in workers.values())}


def stage_rate(metrics_path: Path, stage: str) -> tuple[int, float]:
    m = json.loads(metrics_path.read_text())
    if stage == "ingest":
        return m["inputs_processed_this_run"], m["timing"]["images_per_s"]
    if stage == "extract":
        return m["images_this_run"], m["images_per_s"]
    return m["images_computed"], m["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--distinct", type=int, default=96, help="characters rendered for the pool")
    ap.add_argument("--featurize-subset", type=int, default=None,
                    help="featurize only the first shards holding this many images")
    ap.add_argument("--runner", choices=("inprocess", "local_dask"), default="inprocess")
    ap.add_argument("--workers", type=int, default=2, help="with --runner local_dask")
    ap.add_argument("--stages", default="ingest,extract,featurize")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/s2p-scale"))
    args = ap.parse_args()

    n = args.images
    folder = args.workdir / f"folder-{n}"
    run_dir = args.workdir / f"run-{n}-{args.runner}"
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"scale: {n} files in {folder}", flush=True)
    made = make_folder(folder, n, args.distinct)
    print(f"  folder: {'written in %.0f s' % made if made else 'reused'}", flush=True)

    runner = {"kind": args.runner, "workers": args.workers, "threads_per_worker": 1,
              "address": None}
    base = {"data.root": str(run_dir / "data"), "ingest.source": "folder",
            "ingest.folder": str(folder), "extract.method": "classical",
            "ingest.runner": runner, "extract.runner": runner, "featurize.runner": runner}
    params = run_dir / "params.yaml"
    write_params(params, base)

    results = {"images": n, "runner": runner, "cpu_count": os.cpu_count(), "stages": {}}
    for stage in args.stages.split(","):
        stage_params, data_root = params, run_dir / "data"
        if stage == "featurize" and args.featurize_subset:
            data_root = run_dir / "subset"
            rows = link_subset(run_dir / "data" / "shards" / "color", data_root,
                               args.featurize_subset)
            stage_params = run_dir / "params-featurize.yaml"
            write_params(stage_params, {**base, "data.root": str(data_root)})
            print(f"  featurize on a subset of {rows} images", flush=True)
        print(f"  {stage} ...", flush=True)
        out = run_stage(stage, stage_params, run_dir / f"{stage}.log")
        done, rate = stage_rate(data_root / "metrics" / f"{stage}.json", stage)
        out.update(images=done, images_per_s=rate)
        results["stages"][stage] = out
        peak = out["peak_rss_mib"]
        print(f"  {stage}: {done} images in {out['seconds']} s ({rate} images/s in its work "
              f"loop); peak RSS MiB: stage {peak['stage']}, largest worker {peak['worker']}, "
              f"prefect server {peak['prefect server']}, whole tree {peak['tree']}", flush=True)

    report = args.workdir / f"scale-{n}-{args.runner}.json"
    report.write_text(json.dumps(results, indent=2))
    print(f"scale: wrote {report}")


if __name__ == "__main__":
    main()
