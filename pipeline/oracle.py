"""The oracle style code: a toon's true palette, to test the conditioning path alone.

`featurize.code: oracle_palette` replaces V(y) by what a perfect style encoder
would report: the eight base colours of the toon's palette (background, skin,
hair, eyes, upper, lower, accessory, second background) in CIELAB, divided by
100, 24 numbers. It carries every part's colour exactly and nothing else, so a
generator that cannot follow it within the training budget has a conditioning
problem (where and how the code enters), not an encoder problem.

It is a diagnostic, never a default: it exists only for toon data (the colour
shards' `palette` column), and a generator trained on it can paint only
references whose palette is known (the toon benchmark); `s2p colorize` and the
real-image grid refuse it.
"""
from __future__ import annotations

import numpy as np

from pipeline.config import ConfigError
from pipeline.evaluate.colour import srgb_to_lab
from pipeline.toon import Palette

PARTS = ("background", "skin", "hair", "eyes", "upper", "lower", "accessory", "background2")
ORACLE_DIM = 3 * len(PARTS)


def palette_code(palette: Palette) -> np.ndarray:
    """[24] float32: the palette's base colours in CIELAB / 100, in `PARTS` order."""
    rgb = np.array([[getattr(palette, part) for part in PARTS]], np.uint8)
    return (srgb_to_lab(rgb)[0] / 100.0).reshape(-1).astype(np.float32)


def palette_codes(palette_json: list[str | None], where: str) -> np.ndarray:
    """[N, 24] codes of the colour shards' `palette` column; a row without a
    palette (not a toon) is a one-line ConfigError naming `where`."""
    codes = np.zeros((len(palette_json), ORACLE_DIM), np.float32)
    for i, raw in enumerate(palette_json):
        if not raw:
            raise ConfigError(f"{where}: row {i} has no toon palette; featurize.code: "
                             "oracle_palette works on toon data only (ingest.source: toon)")
        codes[i] = palette_code(Palette.from_json(raw))
    return codes
