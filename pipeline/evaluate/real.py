"""Real sketches painted with real references: how the model does outside toon data.

There is no ground truth here, so the result is a picture (sketch | reference |
output rows) and a count; references pair with sketches in sorted order, cycling.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.colorize import IMAGE_SUFFIXES, ColorizeError, read_rgb, to_grey
from pipeline.evaluate.grid import tile

log = logging.getLogger(__name__)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def skip_reason(sketch_dir: str | None, reference_dir: str | None) -> str | None:
    for key, value in (("real_sketch_dir", sketch_dir), ("real_reference_dir", reference_dir)):
        if not value:
            return f"evaluate.{key} is null"
        if not Path(value).is_dir():
            return f"evaluate.{key}={value} is not a folder"
        if not _images(Path(value)):
            return f"evaluate.{key}={value} has no PNG/JPEG images"
    return None


def colorize_real(colorizer, sketch_dir: str, reference_dir: str, out_png: Path,
                  cell: int) -> dict:
    """Paint every sketch, write the grid; a bad file is skipped and counted."""
    sketches, refs = _images(Path(sketch_dir)), _images(Path(reference_dir))
    rows, failed, codes = [], [], {}
    for i, path in enumerate(sketches):
        ref_path = refs[i % len(refs)]
        try:
            sketch = to_grey(read_rgb(path))
            if ref_path not in codes:
                reference = read_rgb(ref_path)
                codes[ref_path] = (reference, colorizer.style_codes(
                    [colorizer.prepare_reference(reference)])[0])
            reference, code = codes[ref_path]
            rows.append([sketch, reference, colorizer.colorize(sketch, None, style=code)])
        except ColorizeError as err:
            log.warning("real images: skipped %s", err)
            failed.append(str(err))
    if rows:
        from pipeline.colorize import write_image

        write_image(out_png, tile(rows, cell))
    return {"images": len(rows), "failed": len(failed), "sketch_dir": str(sketch_dir),
            "reference_dir": str(reference_dir)}


def placeholder_grid(reason: str, cell: int) -> np.ndarray:
    """The image written when real images are skipped (DVC expects the file): says why."""
    import textwrap

    import cv2

    width = max(3 * cell, 240)
    lines = ["real images skipped:", *textwrap.wrap(reason, width // 7)]
    img = np.full((max(cell, 16 * len(lines) + 8), width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(img, line, (4, 16 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return img
