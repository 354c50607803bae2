"""Reliability figures: how fast a stage stops on a signal, what shard checks cost.

Stop: starts `python -m stages ingest` on a tiny toon config in a temporary folder,
waits for its first shards, sends the signal, and prints the seconds until the
stage exited, its exit status and how many of the processes it started outlived
it; then reruns the stage and prints how many inputs the resumed run processed.
Checksum: times the content-checksum verification a resumed stage runs on every
shard of a shard set (best of 5).

    python benchmarks/reliability.py                 # ctrl_c, sigterm and sigterm_group
    python benchmarks/reliability.py --how ctrl_c --repeats 3
    python benchmarks/reliability.py --checksum data/shards/color
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
HOW = {  # what is signalled: the whole process group (as a terminal does) or the stage alone
    "ctrl_c": (signal.SIGINT, True),
    "sigterm": (signal.SIGTERM, False),
    "sigterm_group": (signal.SIGTERM, True),
}


def params(root: Path, toons: int) -> Path:
    raw = {"data": {"root": str(root / "data"), "resolution": 32, "shard_rows": 8,
                    "row_group_rows": 4},
           "ingest": {"toon_count": toons, "min_size": 16},
           "model": {"depth": 2}}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def one_stop(how: str, toons: int, resume: bool) -> dict:
    signum, group = HOW[how]
    with tempfile.TemporaryDirectory(prefix="s2p-stop-") as tmp:
        root = Path(tmp)
        env = dict(os.environ, S2P_PARAMS=str(params(root, toons)))
        first = root / "data" / "shards" / "color" / "shard-00002.parquet"
        with open(root / "stage.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "stages", "ingest"], cwd=REPO, env=env,
                                    stdout=log, stderr=log, start_new_session=True)
            while not first.exists():
                if proc.poll() is not None:
                    raise SystemExit(f"the stage ended before the signal: {root / 'stage.log'}")
                time.sleep(0.05)
            children = psutil.Process(proc.pid).children(recursive=True)
            (os.killpg if group else os.kill)(proc.pid, signum)
            sent = time.perf_counter()
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
            seconds = time.perf_counter() - sent
        time.sleep(0.5)
        left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        for child in left:
            child.kill()
        out = {"how": how, "seconds_to_exit": round(seconds, 2), "exit_status": rc,
               "children": len(children), "children_left_running": len(left)}
        if resume:
            rerun = subprocess.run([sys.executable, "-m", "stages", "ingest"], cwd=REPO, env=env,
                                   capture_output=True, text=True)
            metrics = json.loads((root / "data" / "metrics" / "ingest.json").read_text())
            out.update(rerun_exit_status=rerun.returncode, images=metrics["images"],
                       resumed_inputs=metrics["inputs_processed_this_run"])
        return out


def checksum_cost(shard_dir: Path) -> dict:
    from pipeline.shards import shard_damage, shard_paths

    paths = shard_paths(shard_dir)
    size = sum(p.stat().st_size for p in paths)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        damaged = [p.name for p in paths if shard_damage(p)]
        best = min(best, time.perf_counter() - started)
    return {"shards": len(paths), "mb": round(size / 1e6, 2), "damaged": damaged,
            "seconds": round(best, 4), "mb_per_s": round(size / 1e6 / best) if best else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--how", choices=sorted(HOW), action="append")
    parser.add_argument("--toons", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--checksum", type=Path, metavar="SHARD_DIR",
                        help="only time the checksum verification of this shard set")
    args = parser.parse_args()
    if args.checksum:
        sys.path.insert(0, str(REPO))
        print(json.dumps(checksum_cost(args.checksum)))
        return
    for how in args.how or list(HOW):
        for _ in range(args.repeats):
            print(json.dumps(one_stop(how, args.toons, not args.no_resume)), flush=True)


if __name__ == "__main__":
    main()
