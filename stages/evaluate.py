"""DVC stage `evaluate`: benchmark, baselines, reconstruction, grids (see flows/evaluate.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.evaluate import evaluate  # noqa: E402
from stages.common import run_stage  # noqa: E402

if __name__ == "__main__":
    run_stage(evaluate)
