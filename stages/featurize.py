"""DVC stage `featurize`: colour shards -> frozen VGG19 style codes (flows/featurize.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.featurize import featurize  # noqa: E402
from stages.common import run_stage  # noqa: E402

if __name__ == "__main__":
    run_stage(featurize)
