"""DVC stage `extract`: data/shards/color -> data/shards/sketch (see flows/extract.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.extract import extract  # noqa: E402
from stages.common import run_stage  # noqa: E402

if __name__ == "__main__":
    run_stage(extract)
