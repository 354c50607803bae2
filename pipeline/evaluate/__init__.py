"""The evaluate stage's library: colour science (`colour`), per-part scoring and the
swap test (`parts`), baselines, the toon benchmark, reconstruction metrics on the
held-out split, real-image grids. The flow is `flows/evaluate.py`."""
