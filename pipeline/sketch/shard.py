"""One colour shard -> one aligned sketch shard (the unit of work of the extract flow).

Rows are streamed `batch_images` at a time, so memory stays bounded by a batch,
not a shard. A colour row that cannot be decoded (or whose pixels disagree with
its width/height) still gets a row: a blank white sketch of the declared size, so
the sketch set stays aligned row for row; its id and reason are returned and kept
in the shard's metadata (`s2p.rejected`), so a resumed run still counts them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.images import decode_stored, encode_image
from pipeline.shards import SKETCH_SCHEMA, shard_paths, shard_records, write_shard
from pipeline.sketch import process

REJECTED = "rejected"  # the shard records of rows given a blank sketch
MAX_SIDE = 1 << 15  # a declared size beyond this is itself corrupt


class BadRow(ValueError):
    """A colour row whose image cannot be used; the message is the reason."""


@dataclass
class ShardOutcome:
    name: str
    rows: int
    seconds: float
    rejected: list[dict] = field(default_factory=list)


def decode_colour(data: bytes | None, width: int | None, height: int | None) -> np.ndarray:
    """PNG/WebP/JPEG bytes -> HxWx3 RGB uint8 matching the row's declared size."""
    if not data:
        raise BadRow("empty colour bytes")
    try:
        rgb = decode_stored(data)
    except ValueError:
        raise BadRow("colour bytes do not decode as an image") from None
    if (width, height) != (rgb.shape[1], rgb.shape[0]):
        raise BadRow(f"decoded {rgb.shape[1]}x{rgb.shape[0]} but the row says {width}x{height}")
    return rgb


def _blank_size(width, height, fallback: int) -> tuple[int, int]:
    good = all(isinstance(v, int) and 0 < v <= MAX_SIDE for v in (width, height))
    return (height, width) if good else (fallback, fallback)


def extract_shard_file(
    colour_path: str | Path,
    sketch_path: str | Path,
    extractor,
    batch_rows: int,
    row_group_rows: int,
    fallback_size: int,
    fingerprint: str,
    progress: Callable[[int, int], None] | None = None,
) -> ShardOutcome:
    """Write the sketch shard for `colour_path`; `progress(done, total)` after each batch."""
    started = time.perf_counter()
    source = pq.ParquetFile(colour_path)
    total = source.metadata.num_rows
    ids: list[str] = []
    pngs: list[bytes] = []
    rejected: list[dict] = []
    columns = ["id", "color", "width", "height"]
    for batch in source.iter_batches(batch_size=batch_rows, columns=columns):
        rows = batch.to_pylist()
        images, slots = [], []
        for row in rows:
            try:
                images.append(decode_colour(row["color"], row["width"], row["height"]))
                slots.append(None)
            except BadRow as err:
                rejected.append({"id": row["id"], "reason": str(err)})
                slots.append(process.blank_sketch(*_blank_size(row["width"], row["height"], fallback_size)))
        sketches = iter(extractor.extract(images) if images else [])
        for row, slot in zip(rows, slots):
            ids.append(row["id"])
            pngs.append(encode_image(slot if slot is not None else next(sketches), "png_fast"))
        if progress:
            progress(len(ids), total)

    table = pa.Table.from_arrays([pa.array(ids, pa.string()), pa.array(pngs, pa.binary())],
                                 schema=SKETCH_SCHEMA)
    write_shard(sketch_path, table, "sketch", row_group_rows, fingerprint,
                records={REJECTED: rejected})
    return ShardOutcome(Path(colour_path).name, total, time.perf_counter() - started, rejected)


def shard_rejects(sketch_path: str | Path) -> list[dict]:
    return shard_records(sketch_path, REJECTED)


def all_rejects(sketch_dir: str | Path) -> list[dict]:
    """Every row given a blank sketch, in shard order."""
    return [r for path in shard_paths(sketch_dir) for r in shard_rejects(path)]
