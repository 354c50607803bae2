"""Record one finished run's headline figures as a row of docs/ablations.csv, or print
the file as the README's markdown table.

    python scripts/ablation_summary.py record NAME "SETTINGS"   # after a run
    python scripts/ablation_summary.py table                    # markdown to stdout

The row is read from the run's own metrics files (data/metrics/{evaluate,train}.json),
so the table holds only measured figures. Recording a name again replaces its row.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "ablations.csv"
PARTS = ("hair", "upper", "lower", "background", "eyes", "skin")
COLUMNS = ("name", "settings", "steps", "swap", *(f"swap_{p}" for p in PARTS),
           "delta_e", "mean_colour_delta_e", "hit_rate", "train_images_per_s", "train_minutes")


def effective(settings: str) -> str:
    """'a=1 b=2 a=3' -> 'b=2 a=3': where `-S` sets a key twice, the last one wins."""
    last: dict[str, str] = {}
    for item in settings.split():
        key = item.split("=", 1)[0]
        last.pop(key, None)
        last[key] = item
    return " ".join(last.values())


def summary_row(name: str, settings: str, metrics_dir: Path) -> dict:
    ev = json.loads((metrics_dir / "evaluate.json").read_text())
    tr = json.loads((metrics_dir / "train.json").read_text())
    swap = ev["swap"]
    per_part = swap.get("per_part", {})
    row = {"name": name, "settings": effective(settings), "steps": tr["steps"],
           "swap": swap["projection"],
           "delta_e": ev["benchmark"]["model"]["delta_e"],
           "mean_colour_delta_e": ev["benchmark"]["mean_colour"]["delta_e"],
           "hit_rate": ev["benchmark"]["model"]["hit_rate"],
           "train_images_per_s": tr["images_per_s"],
           "train_minutes": round(tr["train_seconds"] / 60, 1)}
    for part in PARTS:
        value = per_part.get(part)
        row[f"swap_{part}"] = value["projection"] if isinstance(value, dict) else value
    return row


def read_rows() -> list[dict]:
    if not TABLE.exists():
        return []
    with TABLE.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(rows: list[dict]) -> None:
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    with TABLE.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _fmt(value) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return "—" if value in (None, "", "None") else str(value)


def markdown(rows: list[dict]) -> str:
    head = ("| run | settings | steps | swap | hair | upper | lower | bg | eyes | skin "
            "| ΔE00 (mean colour) | hit | train img/s |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        parts = " | ".join(_fmt(r[f"swap_{p}"]) for p in PARTS)
        lines.append(f"| {r['name']} | {r['settings'] or '(default)'} | {r['steps']} | "
                     f"{_fmt(r['swap'])} | {parts} | {_fmt(r['delta_e'])} "
                     f"({_fmt(r['mean_colour_delta_e'])}) | {_fmt(r['hit_rate'])} | "
                     f"{_fmt(r['train_images_per_s'])} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["record"] and len(argv) == 3:
        row = summary_row(argv[1], argv[2], ROOT / "data" / "metrics")
        rows = [r for r in read_rows() if r["name"] != argv[1]] + [row]
        write_rows(rows)
        print(f"ablations: recorded {argv[1]}: swap {row['swap']}, ΔE00 {row['delta_e']}")
        return 0
    if argv == ["table"]:
        print(markdown(read_rows()))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
