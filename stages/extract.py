"""DVC stage `extract`: data/shards/color -> data/shards/sketch (see flows/extract.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# First: it sets Prefect's environment, and the stage's modules load after validation.
from stages.common import run_stage  # noqa: E402

if __name__ == "__main__":
    run_stage("flows.extract:extract")
