"""Ingest: illustrations (toon generator or a folder) -> validated colour shards.

The work is cut into chunks of `data.shard_rows` inputs; chunk k becomes
`shard-k.parquet`. Chunks are decoded independently (Prefect tasks, possibly on
Dask workers); de-duplication and writing happen in chunk order in the flow, so
the output is identical however the chunks were scheduled, and a resumed run
(completed shards kept, their hashes re-read) equals an uninterrupted one.
Rejected inputs travel inside each shard's file metadata (`s2p.rejects`), so a
crash never loses them; `rejects.parquet` is assembled from the shards at the end.
"""
from __future__ import annotations

import json
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import DataConfig, IngestConfig
from pipeline.images import Rejected, encode_image, prepare_illustration
from pipeline.jsonio import atomic_path
from pipeline.shards import (
    COLOR_SCHEMA,
    assign_split,
    content_id,
    pixel_sha256,
    shard_name,
    shard_paths,
    write_shard,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MEMBER_SEP = "::"  # "archive.zip::path/in/archive.png"
REJECTS_KEY = b"s2p.rejects"


@dataclass
class ChunkResult:
    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------- planning


def plan_toon(cfg: IngestConfig, rows_per_shard: int) -> list[list[str]]:
    seeds = [f"toon:{cfg.seed + i}" for i in range(cfg.toon_count)]
    return _chunks(seeds, rows_per_shard)


def plan_folder(folder: str | Path, rows_per_shard: int) -> tuple[list[list[str]], int]:
    """Sorted list of image inputs (files and archive members), chunked.

    Returns (chunks, ignored) where `ignored` counts non-image files skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: ingest.folder is not a directory")
    items, ignored = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.name.lower()
        if name.endswith(ARCHIVE_SUFFIXES):
            items.extend(_archive_members(path))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            items.append(str(path))
        else:
            ignored += 1
    return _chunks(items, rows_per_shard), ignored


def _archive_members(path: Path) -> list[str]:
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
        else:
            with tarfile.open(path) as tf:
                names = [m.name for m in tf.getmembers() if m.isfile()]
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError):
        # An unreadable archive becomes one input that fails with its reason.
        return [str(path)]
    keep = sorted(n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES)
    return [f"{path}{MEMBER_SEP}{n}" for n in keep]


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------- processing


def read_input(source: str) -> bytes:
    """Bytes of a file or of an archive member `archive::member`."""
    if MEMBER_SEP not in source:
        path = Path(source)
        if path.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise Rejected("unreadable archive")
        return path.read_bytes()
    archive, member = source.split(MEMBER_SEP, 1)
    if archive.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive) as tf:
        fh = tf.extractfile(member)
        if fh is None:
            raise Rejected("archive member is not a regular file")
        return fh.read()


def process_chunk(items: list[str], data: DataConfig, ingest: IngestConfig) -> ChunkResult:
    """Turn one chunk of inputs into candidate rows (not yet de-duplicated)."""
    result = ChunkResult()
    for source in items:
        if source.startswith("toon:"):
            result.rows.append(_toon_row(int(source[5:]), data))
            continue
        try:
            pixels = prepare_illustration(
                read_input(source),
                data.resolution,
                ingest.resize,
                ingest.min_size,
                ingest.min_colourfulness,
                ingest.max_pixels,
            )
        except Rejected as why:
            result.rejects.append({"path": source, "reason": str(why)})
            continue
        except OSError as err:
            result.rejects.append({"path": source, "reason": f"unreadable ({err.strerror or err})"})
            continue
        result.rows.append(_row(pixels, data, source))
    return result


def _toon_row(seed: int, data: DataConfig) -> dict:
    from pipeline import toon

    character = toon.generate(seed, data.resolution)
    row = _row(character.image, data, f"toon:{seed}")
    row["mask"] = encode_image(character.mask, "png")
    row["palette"] = character.palette.to_json()
    return row


def _row(pixels, data: DataConfig, source: str) -> dict:
    digest = pixel_sha256(pixels)
    row_id = content_id(digest)
    return {
        "id": row_id,
        "split": assign_split(row_id, data.split.train, data.split.val),
        "color": encode_image(pixels, data.image_format),
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "source": source,
        "sha256": digest,
        "mask": None,
        "palette": None,
    }


# ---------------------------------------------------------------- writing


def dedupe(result: ChunkResult, seen: dict[str, str]) -> ChunkResult:
    """Drop rows whose pixels were already kept (earlier chunk or row); updates `seen`."""
    kept = ChunkResult(rejects=list(result.rejects))
    for row in result.rows:
        first = seen.get(row["sha256"])
        if first is not None:
            kept.rejects.append({"path": row["source"], "reason": f"duplicate of {first}"})
            continue
        seen[row["sha256"]] = row["source"]
        kept.rows.append(row)
    return kept


def write_color_shard(
    shard_dir: Path, index: int, result: ChunkResult, row_group_rows: int, fingerprint: str
) -> Path:
    table = pa.Table.from_pylist(result.rows, schema=COLOR_SCHEMA)
    table = table.replace_schema_metadata({REJECTS_KEY: json.dumps(result.rejects).encode()})
    return write_shard(shard_dir / shard_name(index), table, "color", row_group_rows, fingerprint)


def shard_rejects(path: Path) -> list[dict]:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(REJECTS_KEY, b"[]"))


def seen_hashes(path: Path) -> Iterator[tuple[str, str]]:
    table = pq.read_table(path, columns=["sha256", "source"])
    yield from zip(table.column("sha256").to_pylist(), table.column("source").to_pylist())


def write_rejects(shard_dir: Path, out: Path) -> list[dict]:
    rejects = [r for p in shard_paths(shard_dir) for r in shard_rejects(p)]
    table = pa.Table.from_pylist(
        rejects, schema=pa.schema([("path", pa.string()), ("reason", pa.string())])
    )
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return rejects
