"""Prefect flows: one per DVC stage, plus the pipeline flow that runs `dvc repro`."""
