"""Ours next to the original: the official Style2paints V1 outputs, same sketch, same style.

`evaluate.v1_outputs_dir` holds real outputs of the 2017 V1 model with their
inputs (`../shared/samples/real/v1_outputs`, see its SOURCES.md):
  v1readme_resultN = v1readme_sketch0 in the style of v1readme_styleN, N = 0..10,
                     v1readme_sketch1 in the style of v1readme_styleN, N = 11..21;
  v1train_e291_fakeT = v1train_e291_sketch in the style of v1train_e291_targetT.
Each block of the picture is one sketch: its first row shows the sketch, every
further row style | V1's output | ours. Nothing here is used for tuning: it shows
whether our outputs change with the reference the way V1's do.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from pipeline.colorize import ColorizeError, read_rgb, to_grey
from pipeline.evaluate.grid import tile

log = logging.getLogger(__name__)


def v1_blocks(folder: Path) -> list[tuple[Path, list[tuple[Path, Path]]]]:
    """[(sketch, [(style, V1 output), …]), …] found in `folder`, in a fixed order."""
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    blocks = []
    readme = sorted((int(m.group(1)), name) for name in files
                    if (m := re.fullmatch(r"v1readme_result(\d+)\.jpg", name)))
    for sketch, numbers in (("v1readme_sketch0.jpg", range(0, 11)),
                            ("v1readme_sketch1.jpg", range(11, 22))):
        pairs = [(files[f"v1readme_style{n}.jpg"], files[name]) for n, name in readme
                 if n in numbers and f"v1readme_style{n}.jpg" in files]
        if sketch in files and pairs:
            blocks.append((files[sketch], pairs))
    fakes = sorted(m.group(1) for name in files
                   if (m := re.fullmatch(r"v1train_e291_fake(\d+)\.jpg", name)))
    pairs = [(files[f"v1train_e291_target{t}.jpg"], files[f"v1train_e291_fake{t}.jpg"])
             for t in fakes if f"v1train_e291_target{t}.jpg" in files]
    if "v1train_e291_sketch.jpg" in files and pairs:
        blocks.append((files["v1train_e291_sketch.jpg"], pairs))
    return blocks


def skip_reason(folder: str | None) -> str | None:
    if not folder:
        return "evaluate.v1_outputs_dir is null"
    if not Path(folder).is_dir():
        return f"evaluate.v1_outputs_dir={folder} is not a folder"
    if not v1_blocks(Path(folder)):
        return f"evaluate.v1_outputs_dir={folder} holds no V1 sketch/style/result files"
    return None


def compare_v1(colorizer, folder: str, cell: int) -> tuple[np.ndarray, dict]:
    """(the side-by-side picture, counts). Blocks sit side by side, three columns each."""
    blocks = v1_blocks(Path(folder))
    columns, painted = [], 0
    for sketch_path, pairs in blocks:
        sketch = to_grey(read_rgb(sketch_path))
        rows = [[sketch]]
        for style_path, v1_path in pairs:
            style = read_rgb(style_path)
            code = colorizer.style_codes([colorizer.prepare_reference(style)])[0]
            ours = colorizer.colorize(sketch, None, style=code)
            rows.append([style, read_rgb(v1_path), ours])
            painted += 1
        columns.append(rows)
    height = max(len(rows) for rows in columns)
    blank = np.full((cell, cell, 3), 255, np.uint8)
    grid_rows = []
    for i in range(height):
        row: list[np.ndarray] = []
        for rows in columns:
            cells = rows[i] if i < len(rows) else []
            row += [*cells, *[blank] * (3 - len(cells))]
        grid_rows.append(row)
    return tile(grid_rows, cell), {"sketches": len(blocks), "paintings": painted,
                                   "folder": str(folder)}


def v1_compare_or_reason(colorizer, folder: str | None, cell: int):
    """(picture, counts) or (None, reason): a broken file is a reason, not a crash."""
    reason = skip_reason(folder)
    if reason is None and colorizer.code == "oracle_palette":
        reason = "an oracle_palette model reads toon palettes, not pictures"
    if reason is not None:
        return None, reason
    try:
        return compare_v1(colorizer, folder, cell)
    except ColorizeError as err:
        log.warning("V1 comparison: %s", err)
        return None, str(err)
