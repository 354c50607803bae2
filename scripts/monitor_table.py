"""The training monitor's learning curves as a markdown table (README "Results").

    python scripts/monitor_table.py [--every 200] [--dvclive data/train/dvclive]

Reads the dvclive series `monitor/swap/<part>` and `monitor/delta_e/all` that the
train stage logs (pipeline/train/monitor.py); `dvc plots show` draws the same curves.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

COLUMNS = ("all", "hair", "upper", "lower", "background", "eyes", "accessory")


def series(path: Path) -> dict[int, float]:
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    value = [k for k in rows[0] if k not in ("step", "timestamp")][0] if rows else None
    return {int(r["step"]): float(r[value]) for r in rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=200, help="show every N-th step")
    ap.add_argument("--dvclive", type=Path, default=Path("data/train/dvclive"))
    args = ap.parse_args()
    base = args.dvclive / "plots" / "metrics" / "monitor"
    swap = {c: series(base / "swap" / f"{c}.tsv") for c in COLUMNS}
    delta_e = series(base / "delta_e" / "all.tsv")
    steps = sorted(swap["all"])
    if not steps:
        raise SystemExit(f"monitor_table: no monitor curves under {base} (train first)")
    shown = [s for s in steps if s % args.every == 0 or s == steps[-1]]
    print("| step | swap: all | " + " | ".join(COLUMNS[1:]) + " | ΔE00 |")
    print("|" + "---|" * (len(COLUMNS) + 2))
    for s in shown:
        cells = " | ".join(f"{swap[c][s]:.2f}" if s in swap[c] else "—" for c in COLUMNS)
        print(f"| {s} | {cells} | {delta_e.get(s, float('nan')):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
