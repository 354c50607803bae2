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
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.jsonio import atomic_path, write_json

log = logging.getLogger("s2p.shards")

SCHEMA_VERSION = 1
MANIFEST = "_manifest.json"
CHECKSUM_KEY = b"s2p.content_sha256"
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


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def shard_paths(shard_dir: str | Path) -> list[Path]:
    return sorted(Path(shard_dir).glob("shard-*.parquet"))


def content_id(sha256_hex: str) -> str:
    return sha256_hex[:16]


def pixel_sha256(pixels) -> str:
    """sha256 of a decoded image array (uint8, C order)."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


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
) -> Path:
    """Write `table` atomically: temp file in the same folder, fsync, rename.

    `fingerprint` identifies the inputs and params that made the shard; a
    resumed stage keeps a shard only when it matches (see `is_complete_shard`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(table.schema.metadata or {})
    meta.update(
        {
            b"s2p.schema_version": str(SCHEMA_VERSION).encode(),
            b"s2p.shard_set": shard_set.encode(),
            b"s2p.fingerprint": fingerprint.encode(),
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
    if fingerprint is not None and meta.metadata.get(b"s2p.fingerprint") != fingerprint.encode():
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
        ids = batches[0].column("id")
        merged = {name: batches[0].column(name) for name in batches[0].schema.names}
        for batch, path in zip(batches[1:], shard.paths[1:]):
            if not batch.column("id").equals(ids):
                raise ValueError(f"{path}: ids do not match {shard.paths[0]} row for row")
            for name in batch.schema.names:
                if name != "id":
                    merged[name] = batch.column(name)
        yield pa.table(merged)


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


def table_from_rows(rows: Iterable[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)
