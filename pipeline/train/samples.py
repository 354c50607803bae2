"""Sample grids written while training: sketch | reference | output | target.

The grid shows a fixed set of held-out rows (val first, see `loader.fixed_rows`).
The first half of the rows use the target's own style code (reconstruction:
reference = target); the second half take the code of *another* row, so the
output should keep its own sketch but follow that reference's colours. The
"target" column is always the sketch's own colour image.

A bounded set is kept: `grid_latest.png`, the first step grid, and the
`KEEP` most recent `grid_step{N}.png`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.images import encode_image
from pipeline.jsonio import atomic_path

KEEP = 4
GAP = 2


def _u8(t: torch.Tensor) -> np.ndarray:
    """[C,H,W] in [-1,1] -> HxWx3 uint8."""
    arr = ((t.float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    arr = np.transpose(arr, (1, 2, 0))
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr


@torch.no_grad()
def render_grid(G: torch.nn.Module, rows: dict, device: torch.device) -> np.ndarray:
    """HxWx3 uint8 grid; G is the plain module (not DDP), put back in train mode after."""
    n = len(rows["sketch"])
    own = torch.arange(n)
    swap = (own + 1) % n
    ref = torch.where(own < (n + 1) // 2, own, swap)
    sketch = rows["sketch"].to(device)
    style = rows["style"][ref].to(device)
    was_training = G.training
    G.eval()
    try:
        out = G(sketch, style).float().cpu()
    finally:
        G.train(was_training)
    tiles = []
    for i in range(n):
        cells = [_u8(rows["sketch"][i]), rows["colour_u8"][int(ref[i])], _u8(out[i]),
                 rows["colour_u8"][i]]
        tiles.append(_hstack(cells))
    return _vstack(tiles)


def _hstack(cells: list[np.ndarray]) -> np.ndarray:
    h = cells[0].shape[0]
    gap = np.full((h, GAP, 3), 255, np.uint8)
    parts = []
    for c in cells:
        parts += [c, gap]
    return np.concatenate(parts[:-1], axis=1)


def _vstack(rows: list[np.ndarray]) -> np.ndarray:
    gap = np.full((GAP, rows[0].shape[1], 3), 255, np.uint8)
    parts = []
    for r in rows:
        parts += [r, gap]
    return np.concatenate(parts[:-1], axis=0)


def write_grid(grid: np.ndarray, folder: Path, step: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"grid_step{step:06d}.png"
    _write_png(path, grid)
    _write_png(folder / "grid_latest.png", grid)
    steps = sorted(folder.glob("grid_step*.png"))
    for old in steps[1:-KEEP]:
        old.unlink()
    return path


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(encode_image(rgb, "png_fast"))
