"""`python -m stages <name>`: every DVC stage's command (see stages/common.py)."""
import sys

# First: it sets Prefect's environment; the stage's modules load after validation.
from stages.common import main

if __name__ == "__main__":
    main(sys.argv[1:])
