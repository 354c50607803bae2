"""Ingest: illustrations (toon generator or a folder) -> validated colour shards.

The work is cut into chunks of `data.shard_rows` inputs; chunk k becomes
`shard-k.parquet`. Chunks are decoded independently (Prefect tasks, possibly on
Dask workers), each into a part file `.parts/shard-k.parquet` beside the shards:
what returns to the flow is the part's path and its rows' hashes, never image
bytes. De-duplication and writing happen in chunk order in the flow, so
the output is identical however the chunks were scheduled, and a resumed run
(completed shards kept, their hashes re-read) equals an uninterrupted one.
Rejected inputs travel inside each shard's file metadata (`s2p.rejects`), so a
crash never loses them; what the plan itself rejects (not an image, a symlinked
folder, ...) is found again by every run's plan. `rejects.parquet` is assembled
from both at the end: every file and archive member is a row or a reject.
"""
from __future__ import annotations

import logging
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import (Config, ConfigError, DataConfig, IngestConfig, content_settings,
                             dask_address)
from pipeline.images import Rejected, deterministic, encode_image, prepare_illustration
from pipeline.jsonio import atomic_path
from pipeline.shards import (
    COLOR_SCHEMA,
    ShardJob,
    assign_split,
    content_id,
    make_fingerprint,
    perceptual_key,
    pixel_sha256,
    shard_name,
    shard_paths,
    shard_records,
    write_shard,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MEMBER_SEP = "::"  # recorded as "archive.zip::path/in/archive.png"
REJECTS = "rejects"  # the shard records holding a chunk's rejected inputs

log = logging.getLogger("s2p.ingest")


PARTS = ".parts"  # decoded chunks waiting for de-duplication, beside the shards


@dataclass
class ChunkResult:
    """One decoded chunk: its candidate rows in the part file `part`, their
    (sha256, source) in row order, and the inputs it rejected."""
    part: str
    hashes: list[tuple[str, str]] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)


def part_path(job: ShardJob) -> Path:
    return job.path.parent / PARTS / job.path.name


# ---------------------------------------------------------------- planning


def check_params(cfg: Config) -> None:
    """What params.yaml asks of this machine, checked before any work (and
    before Prefect is imported): a missing or unreadable ingest.folder, a Dask
    runner without an address. Raises ConfigError."""
    folder = cfg.ingest.folder
    if cfg.ingest.source == "folder":
        if not Path(folder).is_dir():
            raise ConfigError(f"params.yaml: ingest.folder: {folder}: no such folder")
        if not os.access(folder, os.R_OK | os.X_OK):
            raise ConfigError(f"params.yaml: ingest.folder: {folder}: not readable")
    if cfg.ingest.runner.kind == "dask_address":
        dask_address(cfg.ingest.runner, "ingest")


def plan_jobs(cfg: Config) -> tuple[list[ShardJob], list[dict]]:
    """(one job per chunk of `data.shard_rows` inputs, the planning's rejects)."""
    if cfg.ingest.source == "toon":
        chunks, rejects = plan_toon(cfg.ingest, cfg.data.shard_rows), []
    else:
        chunks, rejects = plan_folder(cfg.ingest.folder, cfg.data.shard_rows)
    shard_dir = cfg.layout.shards("color")
    jobs = [ShardJob(shard_name(i), shard_dir / shard_name(i),
                     make_fingerprint(content_settings(cfg.data),
                                      content_settings(cfg.ingest), items), work=len(items),
                     inputs=tuple(items))
            for i, items in enumerate(chunks)]
    return jobs, rejects


class Input(NamedTuple):
    """One thing to ingest: a file under ingest.folder, a member of an archive
    file there, or a generated toon character. A tuple, not a "path::member"
    string, so no file name is ever mistaken for an archive member."""

    path: str = ""  # as the OS gave it: may hold bytes that are not UTF-8
    member: str | None = None
    toon_seed: int | None = None

    @property
    def source(self) -> str:
        """How the input is recorded (rows' `source`, rejects' `path`)."""
        if self.toon_seed is not None:
            return f"toon:{self.toon_seed}"
        path = printable(self.path)
        return path if self.member is None else f"{path}{MEMBER_SEP}{printable(self.member)}"


def printable(name: str) -> str:
    """`name` as valid UTF-8, so recording it never fails: bytes of a file name
    that are not UTF-8 (Linux allows any) become backslash escapes (\\xff)."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file system produced
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def reject(item: Input, reason: str) -> dict:
    return {"path": item.source, "reason": reason}


def plan_toon(cfg: IngestConfig, rows_per_shard: int) -> list[list[Input]]:
    seeds = [Input(toon_seed=cfg.seed + i) for i in range(cfg.toon_count)]
    return _chunks(seeds, rows_per_shard)


def plan_folder(folder: str | Path, rows_per_shard: int) -> tuple[list[list[Input]], list[dict]]:
    """Every file under `folder` in sorted path order: image files and the image
    members of archives become inputs, chunked; everything else becomes a reject
    with its reason (not an image, a symlinked or unreadable folder, a special
    file...), so inputs + rejects account for every file and archive member."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: ingest.folder is not a directory")
    items, rejects = [], []
    for path, problem in _walk(folder):
        item = Input(str(path))
        if problem:
            rejects.append(reject(item, problem))
        elif path.name.lower().endswith(ARCHIVE_SUFFIXES):
            members, unusable = _archive_members(path)
            items += members
            rejects += unusable
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            items.append(item)
        else:
            rejects.append(reject(item, not_an_image(path.name)))
    return _chunks(items, rows_per_shard), rejects


def not_an_image(name: str) -> str:
    return f"not an image file (suffix {Path(name).suffix.lower() or 'none'!r})"


def _walk(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for each regular file under `folder`, depth first in sorted
    order; (path, reason) for what cannot be ingested. Symlinked folders are not
    followed (no cycles, nothing outside the folder); symlinked files are read."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        yield folder, f"unreadable folder ({err.strerror or type(err).__name__})"
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(path)
            elif entry.is_symlink() and path.is_dir():
                yield path, "symbolic link to a folder (not followed)"
            elif entry.is_file(follow_symlinks=True):
                yield path, None
            elif entry.is_symlink():
                yield path, "broken symbolic link"
            else:
                yield path, "not a regular file (fifo, socket or device)"
        except OSError as err:
            yield path, f"unreadable ({err.strerror or type(err).__name__})"


def _archive_members(path: Path) -> tuple[list[Input], list[dict]]:
    """(image members as inputs, rejects for the other members) of one archive."""
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                entries = [(i.filename, None) for i in zf.infolist() if not i.is_dir()]
        else:
            with tarfile.open(path) as tf:
                entries = [(m.name, None if m.isfile() else "archive member is not a regular file")
                           for m in tf.getmembers() if not m.isdir()]
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error) as err:
        return [], [reject(Input(str(path)), f"unreadable archive ({_describe(err)})")]
    items, rejects = [], []
    for name, problem in sorted(entries, key=lambda entry: entry[0]):
        item = Input(str(path), name)
        if problem:
            rejects.append(reject(item, problem))
        elif Path(name).suffix.lower() in IMAGE_SUFFIXES:
            items.append(item)
        else:
            rejects.append(reject(item, not_an_image(name)))
    return items, rejects


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------- processing


def read_input(item: Input, max_bytes: int) -> bytes:
    """Bytes of a file or archive member, or `Rejected`; the size is checked
    against `max_bytes` (ingest.max_bytes) before anything is read, and the read
    stops there anyway (an archive may declare a false size)."""
    if item.member is None:
        size = os.stat(item.path).st_size
        _check_size(size, max_bytes)
        with open(item.path, "rb") as fh:
            return _bounded_read(fh, max_bytes)
    try:
        if item.path.lower().endswith(".zip"):
            with zipfile.ZipFile(item.path) as zf:
                _check_size(zf.getinfo(item.member).file_size, max_bytes)
                with zf.open(item.member) as fh:
                    return _bounded_read(fh, max_bytes)
        with tarfile.open(item.path) as tf:
            info = tf.getmember(item.member)
            _check_size(info.size, max_bytes)
            fh = tf.extractfile(info)
            if fh is None:
                raise Rejected("archive member is not a regular file")
            return _bounded_read(fh, max_bytes)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, KeyError,
            RuntimeError, NotImplementedError) as err:  # zipfile: encrypted, unknown method
        raise Rejected(f"unreadable archive member ({_describe(err)})") from None


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise Rejected(f"too large ({size} bytes > ingest.max_bytes={max_bytes})")


def _bounded_read(fh, max_bytes: int) -> bytes:
    data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Rejected(f"too large (more than ingest.max_bytes={max_bytes} bytes)")
    return data


def _describe(err: Exception) -> str:
    return deterministic(f"{type(err).__name__}: {err}")[:160]


def process_chunk(items: list[Input], data: DataConfig, ingest: IngestConfig,
                  part: str | Path) -> ChunkResult:
    """Turn one chunk of inputs into candidate rows (not yet de-duplicated),
    written to the part file `part`. Whatever goes wrong with one input is
    recorded as its reject reason."""
    rows, rejects = [], []
    for item in items:
        row = _decode(item, data, ingest, rejects)
        if row is not None:
            rows.append(row)
    with atomic_path(part) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=COLOR_SCHEMA), tmp)
    return ChunkResult(str(part), [(row["sha256"], row["source"]) for row in rows], rejects)


def _decode(item: Input, data: DataConfig, ingest: IngestConfig, rejects: list[dict]) -> dict | None:
    """One input's row, or None with its reason appended to `rejects`."""
    if item.toon_seed is not None:
        return _toon_row(item.toon_seed, data)
    try:
        pixels = prepare_illustration(
            read_input(item, ingest.max_bytes),
            data.resolution,
            ingest.resize,
            ingest.min_size,
            ingest.min_colourfulness,
            ingest.max_pixels,
        )
    except Rejected as why:
        rejects.append(reject(item, str(why)))
        return None
    except OSError as err:
        rejects.append(reject(item, f"unreadable ({err.strerror or _describe(err)})"))
        return None
    except Exception as err:  # a bad file never stops the stage: record it, say so
        log.warning("%s: unexpected %s while ingesting; rejected", item.source,
                    type(err).__name__)
        rejects.append(reject(item, f"unexpected error ({_describe(err)})"))
        return None
    return _row(pixels, data, item.source)


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
    split_key = row_id if data.split_by == "pixels" else perceptual_key(pixels)
    return {
        "id": row_id,
        "split": assign_split(split_key, data.split.train, data.split.val),
        "color": encode_image(pixels, data.image_format),
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "source": source,
        "sha256": digest,
        "mask": None,
        "palette": None,
    }


# ---------------------------------------------------------------- writing


def dedupe(result: ChunkResult, seen: dict[str, str]) -> tuple[list[int], list[dict]]:
    """Rows of the chunk to keep (pixels not kept before, by an earlier chunk or
    row) and the chunk's rejects with the duplicates added; updates `seen`."""
    keep, rejects = [], list(result.rejects)
    for index, (sha256, source) in enumerate(result.hashes):
        first = seen.get(sha256)
        if first is not None:
            rejects.append({"path": source, "reason": f"duplicate of {first}"})
            continue
        seen[sha256] = source
        keep.append(index)
    return keep, rejects


def write_colour_shard(job: ShardJob, result: ChunkResult, seen: dict[str, str],
                       row_group_rows: int) -> Path:
    """The chunk's shard: its part file's rows less the duplicates; the part goes."""
    keep, rejects = dedupe(result, seen)
    table = pq.read_table(result.part, schema=COLOR_SCHEMA).take(pa.array(keep, pa.int64()))
    path = write_shard(job.path, table, "color", row_group_rows, job.fingerprint,
                       records={REJECTS: rejects})
    Path(result.part).unlink()
    return path


def shard_rejects(path: Path) -> list[dict]:
    return shard_records(path, REJECTS)


def seen_hashes(path: Path) -> Iterator[tuple[str, str]]:
    table = pq.read_table(path, columns=["sha256", "source"])
    yield from zip(table.column("sha256").to_pylist(), table.column("source").to_pylist())


def write_rejects(shard_dir: Path, out: Path, planned: list[dict]) -> list[dict]:
    """rejects.parquet: the planning's rejects (`plan_folder`) and every shard's,
    sorted by path."""
    rejects = sorted(planned + [r for p in shard_paths(shard_dir) for r in shard_rejects(p)],
                     key=lambda r: (r["path"], r["reason"]))
    table = pa.Table.from_pylist(
        rejects, schema=pa.schema([("path", pa.string()), ("reason", pa.string())])
    )
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return rejects
