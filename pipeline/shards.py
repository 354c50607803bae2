"""Parquet shard sets: the on-disk format every stage reads and writes.

A shard set is a folder `data/shards/<name>/` of `shard-00000.parquet`,
`shard-00001.parquet`, ... plus `_manifest.json`. Stages add columns as new
shard sets aligned row for row with the colour set (same shard names, same row
order, the `id` column repeated as the join key), so no stage rewrites another's
output.

Schema version 1, colour set (`COLOR_SCHEMA`):
    id        string   first 16 hex digits of `sha256`
    split     string   train | val | test, from a hash of id (ratios in params)
    color     binary   encoded image (PNG by default)
    width     int32
    height    int32
    source    string   original path (folder; "archive::member"; bytes that are not
                       UTF-8 as \\xNN escapes) or "toon:<seed>"
    sha256    string   sha256 of the stored image's RGB pixels (uint8, HxWx3, C order),
                       i.e. after the resize: what ingest de-duplicates on
    mask      binary   toon rows only: PNG of the uint8 part label map, else null
    palette   string   toon rows only: JSON of the part palette, else null

Sketch set: id, sketch (PNG, single channel). Style set: id, style
(fixed_size_list<float16>[4096]) and style_aug (list of K such vectors).
Each file carries `s2p.schema_version` and `s2p.shard_set` in its metadata.
Files are written to a temporary name and renamed, so a shard either exists
complete or not at all; that is what makes every stage resumable per shard.
A temporary file left by a killed writer is removed by the next run
(`prepare_shard_dir`, `write_manifest`), so it never reaches DVC's hash.

Each file also carries `s2p.content_sha256`: the sha256 of every byte before
the Parquet footer (all row groups and pages) and of the file's other `s2p.*`
metadata. A resumed stage keeps a shard only when it still matches, so bytes
overwritten anywhere in the data are rebuilt rather than trusted.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.jsonio import atomic_path, write_json

log = logging.getLogger("s2p.shards")

SCHEMA_VERSION = 1
MANIFEST = "_manifest.json"
CHECKSUM_KEY = b"s2p.content_sha256"
FINGERPRINT_KEY = b"s2p.fingerprint"
PARTIAL_WRITES = ".*.tmp-*"  # the temporary names of `jsonio.atomic_path`

COLOR_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("color", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("source", pa.string()),
        ("sha256", pa.string()),
        ("mask", pa.binary()),
        ("palette", pa.string()),
    ]
)
SKETCH_SCHEMA = pa.schema([("id", pa.string()), ("sketch", pa.binary())])


def style_schema(dim: int) -> pa.Schema:
    """`style`: V(y) of the colour image; `style_aug`: K codes of distorted copies."""
    return pa.schema([
        ("id", pa.string()),
        ("style", pa.list_(pa.float16(), dim)),
        ("style_aug", pa.list_(pa.list_(pa.float16(), dim))),
    ])


def style_table(ids: list[str], style: np.ndarray, style_aug: np.ndarray,
                valid: np.ndarray | None = None) -> pa.Table:
    """Rows of codes -> a style_schema table; style [N,D], style_aug [N,K,D].

    Rows with valid=False (an undecodable colour image) get null style and
    style_aug, so the set stays aligned row for row with the colour set.
    """
    n, k, dim = len(ids), style_aug.shape[1], style.shape[1]
    mask = None if valid is None else pa.array(~np.asarray(valid, dtype=bool))
    codes = pa.FixedSizeListArray.from_arrays(
        pa.array(style.astype(np.float16).reshape(-1)), dim, mask=mask)
    aug_codes = pa.FixedSizeListArray.from_arrays(
        pa.array(style_aug.astype(np.float16).reshape(-1)), dim)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
    aug = pa.ListArray.from_arrays(offsets, aug_codes, mask=mask)
    return pa.Table.from_arrays([pa.array(ids, pa.string()), codes, aug], schema=style_schema(dim))


def style_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A table with `style` and `style_aug` -> (style [N,D] float16,
    style_aug [N,K,D] float16, valid [N] bool). Null rows come back as zeros
    with valid=False; callers must drop them."""
    style_col = table.column("style").combine_chunks()
    dim = style_col.type.list_size
    n = len(style_col)
    valid = ~np.asarray(style_col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    style = np.zeros((n, dim), np.float16)
    aug_col = table.column("style_aug").combine_chunks()
    lengths = aug_col.value_lengths().fill_null(0).to_numpy()
    k = int(lengths.max()) if n else 0
    if np.any(lengths[valid] != k):
        raise ValueError("style_aug rows hold different numbers of copies")
    style_aug = np.zeros((n, k, dim), np.float16)
    if valid.any():
        style[valid] = _float16_values(style_col.filter(pa.array(valid))).reshape(-1, dim)
        if k:
            aug_valid = aug_col.filter(pa.array(valid))
            style_aug[valid] = _float16_values(aug_valid.flatten()).reshape(-1, k, dim)
    return style, style_aug, valid


def _float16_values(fixed: pa.Array) -> np.ndarray:
    return fixed.flatten().to_numpy(zero_copy_only=False).astype(np.float16, copy=False)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def shard_paths(shard_dir: str | Path) -> list[Path]:
    return sorted(Path(shard_dir).glob("shard-*.parquet"))


def content_id(sha256_hex: str) -> str:
    return sha256_hex[:16]


def pixel_sha256(pixels) -> str:
    """sha256 of a decoded image array (uint8, C order)."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def perceptual_key(pixels: np.ndarray) -> str:
    """A coarse difference hash (dHash, 4 rows × 4 comparisons = 16 bits, 4 hex
    digits) of the picture: the same for most near-duplicates (another size,
    another JPEG quality), so `data.split_by: perceptual` puts them in one split.
    Coarse on purpose: a finer hash tells more pictures apart but splits more
    near-duplicates (on 100 random pictures, each with two JPEG qualities and a
    resized copy: 64 bits kept 80% of the copies with their original, 16 bits
    93%, and still told the 100 originals apart). Unrelated pictures that share a
    key only share a split, which does no harm."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = cv2.resize(grey, (5, 4), interpolation=cv2.INTER_AREA)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):04x}"


def assign_split(row_id: str, train: float, val: float) -> str:
    """Deterministic split from the id alone, so it never changes on re-ingest."""
    bucket = int(hashlib.sha256(("split:" + row_id).encode()).hexdigest()[:8], 16) / 2**32
    if bucket < train:
        return "train"
    if bucket < train + val:
        return "val"
    return "test"


def write_shard(
    path: str | Path,
    table: pa.Table,
    shard_set: str,
    row_group_rows: int,
    fingerprint: str = "",
    records: dict[str, list] | None = None,
) -> Path:
    """Write `table` atomically: temp file in the same folder, fsync, rename.

    `fingerprint` identifies the inputs and params that made the shard; a
    resumed stage keeps a shard only when it matches (see `plan_shards`).
    `records` are JSON lists kept in the file's metadata as `s2p.<name>` (the
    rows a stage rejected), read back with `shard_records`: they survive a crash
    with the shard they belong to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(table.schema.metadata or {})
    for name, values in (records or {}).items():
        meta[_record_key(name)] = json.dumps(values).encode()
    meta.update(
        {
            b"s2p.schema_version": str(SCHEMA_VERSION).encode(),
            b"s2p.shard_set": shard_set.encode(),
            FINGERPRINT_KEY: fingerprint.encode(),
        }
    )
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink:
        writer = pq.ParquetWriter(
            sink,
            table.schema,
            compression="zstd",
            use_dictionary=["id", "split", "source"] if "split" in table.column_names else ["id"],
        )
        writer.write_table(table, row_group_size=row_group_rows)
        # Every row group is on disk now; only the footer is still to come.
        data = Path(tmp).read_bytes()[: sink.tell()]
        writer.add_key_value_metadata({CHECKSUM_KEY: _content_sha256(data, meta)})
        writer.close()
    return path


def _record_key(name: str) -> bytes:
    return f"s2p.{name}".encode()


def shard_records(path: str | Path, name: str) -> list:
    """The `records[name]` list that `write_shard` stored in the shard at `path`."""
    meta = pq.read_metadata(path).metadata or {}
    return json.loads(meta.get(_record_key(name), b"[]"))


def _content_sha256(data: bytes, metadata: dict) -> str:
    digest = hashlib.sha256(data)
    ours = {k: v for k, v in metadata.items() if k.startswith(b"s2p.") and k != CHECKSUM_KEY}
    for key in sorted(ours):
        digest.update(b"\0" + key + b"\0" + ours[key])
    return digest.hexdigest()


def shard_damage(path: str | Path) -> str | None:
    """Why the shard at `path` cannot be trusted, or None when its content
    checksum matches (see the module docstring)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        meta = pq.read_metadata(path)
    except (pa.ArrowException, OSError) as err:
        return f"unreadable ({type(err).__name__})"
    footer = int.from_bytes(data[-8:-4], "little")  # the file ends <footer><len:4>PAR1
    stored = (meta.metadata or {}).get(CHECKSUM_KEY)
    if stored is None:
        return "no content checksum (written by an older version)"
    if _content_sha256(data[: len(data) - 8 - footer], meta.metadata).encode() != stored:
        return "content checksum mismatch (bytes changed after it was written)"
    return None


def is_complete_shard(
    path: str | Path, expected_rows: int | None = None, fingerprint: str | None = None
) -> bool:
    """True when `path` is an undamaged shard of our schema version, with the
    expected row count and fingerprint when given (stale shards from other
    params are not complete). A damaged shard is logged; the caller rebuilds it."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError):
        return False
    version = (meta.metadata or {}).get(b"s2p.schema_version")
    if version != str(SCHEMA_VERSION).encode():
        return False
    if fingerprint is not None and meta.metadata.get(FINGERPRINT_KEY) != fingerprint.encode():
        return False
    if expected_rows is not None and meta.num_rows != expected_rows:
        return False
    damage = shard_damage(path)
    if damage:
        log.warning("%s: %s; it will be rebuilt", path, damage)
    return damage is None


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in `folder`.
    Call it only while nothing writes there (before a stage's work, after it)."""
    leftovers = sorted(Path(folder).glob(PARTIAL_WRITES))
    for path in leftovers:
        path.unlink(missing_ok=True)
    if leftovers:
        log.info("%s: removed %d temporary file(s) of an interrupted run", folder, len(leftovers))
    return leftovers


def prepare_shard_dir(shard_dir: str | Path) -> Path:
    """Create a stage's output folder, without any partial write of a killed run."""
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_writes(shard_dir)
    return shard_dir


def read_ids(path: str | Path) -> list[str]:
    return pq.read_table(path, columns=["id"]).column("id").to_pylist()


def write_manifest(shard_dir: str | Path, shard_set: str, extra: dict | None = None) -> dict:
    """Summarise a finished shard set; written last, after every shard exists.
    Temporary files of writers killed during the run (a Dask worker whose task
    was retried elsewhere) are removed first: they would change DVC's hash."""
    shard_dir = Path(shard_dir)
    remove_partial_writes(shard_dir)
    shards = []
    for path in shard_paths(shard_dir):
        meta = pq.read_metadata(path)
        shards.append({"name": path.name, "rows": meta.num_rows, "bytes": path.stat().st_size})
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "shard_set": shard_set,
        "shards": shards,
        "rows": sum(s["rows"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        **(extra or {}),
    }
    write_json(shard_dir / MANIFEST, manifest)
    return manifest


def read_manifest(shard_dir: str | Path) -> dict:
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; run the stage that writes {shard_dir}")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema version {manifest.get('schema_version')} != {SCHEMA_VERSION}"
        )
    return manifest


def make_fingerprint(*parts) -> str:
    """Stable short hash of JSON-able parts (pydantic models allowed)."""
    plain = [p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ShardJob:
    """One output shard to make.

    `work` counts what the task processes (inputs or rows: the progress bar's
    unit); a finished file must carry `fingerprint`, hold `rows` rows when that
    is known in advance, and have the ids of `source` (the input shard it is
    aligned with) when there is one. `inputs` is what a stage needs to make it
    (ingest: its chunk of inputs)."""

    name: str
    path: Path
    fingerprint: str
    work: int
    rows: int | None = None
    source: Path | None = None
    inputs: tuple = ()


@dataclass(frozen=True)
class ShardPlan:
    """The shards of one output set: those finished and valid for the current
    fingerprints (`done`) and those to (re)make (`todo`), both in shard order."""

    folder: Path
    done: list[ShardJob]
    todo: list[ShardJob]


def plan_shards(folder: str | Path, jobs: Sequence[ShardJob], chained: bool = False) -> ShardPlan:
    """Plan an output shard set and clean its folder for the run: temporary files
    of a killed run and shards no job makes any more (a smaller input set) are
    deleted, so neither reaches DVC's hash. With `chained`, the first shard that
    must be remade invalidates every later one (ingest: de-duplication depends
    on every earlier shard)."""
    folder = prepare_shard_dir(folder)
    names = {job.name for job in jobs}
    for stale in shard_paths(folder):
        if stale.name not in names:
            stale.unlink()
    done: list[ShardJob] = []
    todo: list[ShardJob] = []
    for job in jobs:
        if not (chained and todo) and _finished(job):
            done.append(job)
        else:
            todo.append(job)
    if done:
        log.info("%s: resuming, %d of %d shard(s) already complete", folder, len(done), len(jobs))
    return ShardPlan(folder, done, todo)


def _finished(job: ShardJob) -> bool:
    if not is_complete_shard(job.path, job.rows, job.fingerprint):
        return False
    return job.source is None or read_ids(job.path) == read_ids(job.source)


def aligned_jobs(source_dir: str | Path, out_dir: str | Path,
                 fingerprint: Callable[[str, int, str], str]) -> list[ShardJob]:
    """One job per shard of `source_dir`, writing the shard of the same name in
    `out_dir`; `fingerprint(name, rows, source shard's fingerprint)` says what
    the output depends on besides the stage's settings."""
    jobs = []
    for source in shard_paths(source_dir):
        meta = pq.read_metadata(source)
        made_from = (meta.metadata or {}).get(FINGERPRINT_KEY, b"").decode()
        jobs.append(ShardJob(source.name, Path(out_dir) / source.name,
                             fingerprint(source.name, meta.num_rows, made_from),
                             work=meta.num_rows, rows=meta.num_rows, source=source))
    return jobs


@dataclass(frozen=True)
class AlignedShard:
    """One shard name across several aligned shard sets."""

    name: str
    paths: tuple[Path, ...]


def aligned_shards(shard_dirs: Sequence[str | Path]) -> list[AlignedShard]:
    """Shard names present in the first set, checked to exist in every other set."""
    first, *others = [Path(d) for d in shard_dirs]
    names = [p.name for p in shard_paths(first)]
    for other in others:
        missing = sorted(set(names) - {p.name for p in shard_paths(other)})
        if missing:
            raise FileNotFoundError(
                f"{other}: missing {len(missing)} shard(s) aligned with {first} (e.g. {missing[0]})"
            )
    return [AlignedShard(n, tuple(Path(d) / n for d in shard_dirs)) for n in names]


def iter_aligned_batches(
    shard: AlignedShard,
    columns: Sequence[Sequence[str] | None],
    batch_rows: int = 64,
) -> Iterator[pa.Table]:
    """Stream one aligned shard as tables joining the sets' columns row by row.

    `columns[i]` selects the columns read from set i (None = all). Reads one row
    group at a time, so memory is bounded by the row-group size. Raises if the
    sets' `id` columns disagree (a mis-aligned set would silently pair the
    wrong sketch with a colour image).
    """
    files = [pq.ParquetFile(p) for p in shard.paths]
    for f, path in zip(files, shard.paths):
        if f.metadata.num_rows != files[0].metadata.num_rows:
            raise ValueError(f"{path}: {f.metadata.num_rows} rows, expected "
                             f"{files[0].metadata.num_rows} as in {shard.paths[0]}")
    iters = [
        f.iter_batches(batch_size=batch_rows, columns=_with_id(cols))
        for f, cols in zip(files, columns)
    ]
    for batches in zip(*iters):
        yield _join(batches, shard.paths)


def read_aligned(shard: AlignedShard, columns: Sequence[Sequence[str] | None],
                 row_group: int | None = None) -> pa.Table:
    """One row group of an aligned shard (the whole shard when None) as one
    table joining the sets' columns row by row; raises like `iter_aligned_batches`.
    A column a set lacks is a ValueError naming the file."""
    parts = []
    for path, cols in zip(shard.paths, columns):
        f = pq.ParquetFile(path)
        missing = [c for c in _with_id(cols) or [] if c not in f.schema_arrow.names]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        cols = _with_id(cols)
        parts.append(f.read(columns=cols) if row_group is None
                     else f.read_row_group(row_group, columns=cols))
    return _join(parts, shard.paths)


def _join(parts: Sequence, paths: Sequence[Path]) -> pa.Table:
    """Tables or record batches of aligned sets -> one table; ids checked."""
    ids = parts[0].column("id")
    merged = {name: parts[0].column(name) for name in parts[0].schema.names}
    for part, path in zip(parts[1:], paths[1:]):
        if not part.column("id").equals(ids):
            raise ValueError(f"{path}: ids do not match {paths[0]} row for row")
        for name in part.schema.names:
            if name != "id":
                merged[name] = part.column(name)
    return pa.table(merged)


def _with_id(cols: Sequence[str] | None) -> list[str] | None:
    if cols is None:
        return None
    return list(cols) if "id" in cols else ["id", *cols]


def iter_rows(
    shard_dirs: Sequence[str | Path],
    columns: Sequence[Sequence[str] | None] | None = None,
    split: str | None = None,
) -> Iterator[dict]:
    """Every row of aligned shard sets as dicts, in shard order.

    The first set must hold `split` when a split filter is given.
    """
    columns = columns or [None] * len(shard_dirs)
    for shard in aligned_shards(shard_dirs):
        for table in iter_aligned_batches(shard, columns):
            for row in table.to_pylist():
                if split is None or row.get("split") == split:
                    yield row
