"""Training curves: dvclive writes them under data/train/dvclive/ (declared as
plots in dvc.yaml), one TSV per metric with a `step` column.

Logged every `train.log_every` steps: the window's mean of each loss term
(`loss/...`), the learning rates (`lr/...`), images/s, and at monitor steps the
reference-following scores (`monitor/...`, pipeline/train/monitor.py).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from pipeline.config import Config
from pipeline.train.schedule import lr_scale

log = logging.getLogger("s2p.train")


def open_curves(folder: Path, resume: bool):
    """A dvclive writer of metric files only: dvc.yaml declares the plots and
    experiments are not used, so no dvc.yaml, no experiment, no report.

    dvclive 3.49 has no public option to skip its DVC/Git discovery: it opens
    the DVC repository around the working directory (fine in a checkout of this
    project, which has .dvc/ and commits). In a Git repository without DVC it
    would run `dvc init` there, and in one without commits it fails ("Empty git
    repo"): run the stage from a checkout of this project.
    """
    from dvclive import Live

    return Live(dir=str(folder), resume=resume, dvcyaml=False, save_dvc_exp=False, report=None)


def trim_curves(folder: Path, step: int) -> None:
    """Drop logged rows at or after `step`: a crashed run logged them after its
    last checkpoint, and the resumed run logs those steps again."""
    for tsv in (folder / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        head = lines[0].split("\t")
        col = head.index("step") if "step" in head else None
        keep = [lines[0]] + [ln for ln in lines[1:]
                             if col is None or int(ln.split("\t")[col]) < step]
        tsv.write_text("\n".join(keep) + "\n")


def first_logged(folder: Path) -> dict[str, float]:
    """The first logged value of each loss term (for train.json)."""
    first = {}
    for tsv in sorted((folder / "plots" / "metrics" / "loss").glob("*.tsv")):
        lines = tsv.read_text().splitlines()
        if len(lines) > 1:
            head, row = lines[0].split("\t"), lines[1].split("\t")
            first[tsv.stem] = round(float(row[head.index(tsv.stem)]), 6)
    return first


def _log_monitor(live, scores: dict[str, float]) -> None:
    for k, v in scores.items():
        live.log_metric(f"monitor/{k}", v)


def log_window(live, window: list[dict], step: int, cfg: Config, images_per_s: float, bar,
         watched: dict[str, float]) -> None:
    """Log the window's mean of every loss term, the learning rates, images/s and
    the monitor's scores when it ran at this step."""
    mean = {k: float(torch.stack([w[k] for w in window]).mean()) for k in window[0]}
    if not math.isfinite(mean["g_total"]) or not math.isfinite(mean["d_total"]):
        raise FloatingPointError(f"train: loss is not finite at step {step}: {mean}")
    live.step = step
    for k, v in mean.items():
        live.log_metric(f"loss/{k}", v)
    scale = lr_scale(cfg.train, step - 1)  # the rate the step just taken used
    live.log_metric("lr/g", cfg.train.lr_g * scale)
    live.log_metric("lr/d", cfg.train.lr_d * scale)
    live.log_metric("images_per_s", images_per_s)
    _log_monitor(live, watched)
    live.next_step()
    if bar is not None:
        bar.set_postfix_str(f"g {mean['g_total']:.4f} (l1 {mean['g_l1']:.4f}) "
                            f"d {mean['d_total']:.4f}", refresh=False)
    log.debug("train: step %d %s", step, mean)
