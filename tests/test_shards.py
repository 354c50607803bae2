"""Shard format: schema round trip, atomic writes, aligned reading."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import shards


def colour_rows(n, prefix="a"):
    return [
        {"id": f"{prefix}{i:015d}", "split": "train", "color": bytes([i]), "width": 1, "height": 1,
         "source": f"s{i}", "sha256": "0" * 64, "mask": None, "palette": None}
        for i in range(n)
    ]


def test_round_trip_and_metadata(tmp_path):
    table = pa.Table.from_pylist(colour_rows(10), schema=shards.COLOR_SCHEMA)
    path = shards.write_shard(tmp_path / shards.shard_name(0), table, "color", 4, "fp1")
    back = pq.read_table(path)
    assert back.to_pylist() == table.to_pylist()
    meta = pq.read_metadata(path)
    assert meta.metadata[b"s2p.schema_version"] == b"1"
    assert meta.num_row_groups == 3
    assert shards.is_complete_shard(path, 10, "fp1")
    assert not shards.is_complete_shard(path, 10, "other-params")
    assert not shards.is_complete_shard(path, 11)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    table = pa.Table.from_pylist(colour_rows(3), schema=shards.COLOR_SCHEMA)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        shards.write_shard(tmp_path / "shard-00000.parquet", table, "color", 2)
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_not_complete(tmp_path):
    table = pa.Table.from_pylist(colour_rows(3), schema=shards.COLOR_SCHEMA)
    path = shards.write_shard(tmp_path / "shard-00000.parquet", table, "color", 2)
    path.write_bytes(path.read_bytes()[:-20])
    assert not shards.is_complete_shard(path)


def test_aligned_rows_join_and_detect_misalignment(tmp_path):
    for i in range(2):
        rows = colour_rows(5, prefix=f"{i}")
        shards.write_shard(tmp_path / "color" / shards.shard_name(i),
                           pa.Table.from_pylist(rows, schema=shards.COLOR_SCHEMA), "color", 2)
        sketch = pa.Table.from_pylist([{"id": r["id"], "sketch": b"s" + r["color"]} for r in rows],
                                      schema=shards.SKETCH_SCHEMA)
        shards.write_shard(tmp_path / "sketch" / shards.shard_name(i), sketch, "sketch", 2)
    shards.write_manifest(tmp_path / "color", "color")
    assert shards.read_manifest(tmp_path / "color")["rows"] == 10
    rows = list(shards.iter_rows([tmp_path / "color", tmp_path / "sketch"],
                                 columns=[["color"], ["sketch"]]))
    assert len(rows) == 10 and all(r["sketch"] == b"s" + r["color"] for r in rows)

    bad = pa.Table.from_pylist([{"id": "x" * 16, "sketch": b""}] * 5, schema=shards.SKETCH_SCHEMA)
    shards.write_shard(tmp_path / "sketch" / shards.shard_name(1), bad, "sketch", 2)
    with pytest.raises(ValueError, match="ids do not match"):
        list(shards.iter_rows([tmp_path / "color", tmp_path / "sketch"]))
    (tmp_path / "sketch" / shards.shard_name(1)).unlink()
    with pytest.raises(FileNotFoundError, match="missing 1 shard"):
        shards.aligned_shards([tmp_path / "color", tmp_path / "sketch"])


def test_split_is_deterministic_and_follows_ratios():
    ids = [f"{i:016x}" for i in range(4000)]
    splits = [shards.assign_split(i, 0.8, 0.1) for i in ids]
    assert splits == [shards.assign_split(i, 0.8, 0.1) for i in ids]
    share = splits.count("train") / len(ids)
    assert 0.77 < share < 0.83


def test_overwritten_bytes_are_damage_not_a_complete_shard(tmp_path):
    """The footer alone says nothing about the data: a byte changed inside a page
    must make the shard incomplete (it is rebuilt), not be trusted on resume."""
    table = pa.Table.from_pylist(colour_rows(50), schema=shards.COLOR_SCHEMA)
    path = shards.write_shard(tmp_path / "shard-00000.parquet", table, "color", 8, "fp")
    good = path.read_bytes()
    assert shards.shard_damage(path) is None and shards.is_complete_shard(path, 50, "fp")
    data_end = len(good) - 8 - int.from_bytes(good[-8:-4], "little")  # where the footer starts
    for offset in (4, data_end // 2, data_end - 1):
        damaged = bytearray(good)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        assert pq.read_metadata(path).num_rows == 50  # the footer still reads fine
        assert "checksum mismatch" in shards.shard_damage(path)
        assert not shards.is_complete_shard(path, 50, "fp")
    path.write_bytes(good.replace(b"fp", b"fq"))  # our metadata is covered too
    assert not shards.is_complete_shard(path, 50, "fq")


def test_shard_without_checksum_is_rebuilt(tmp_path):
    table = pa.Table.from_pylist(colour_rows(3), schema=shards.COLOR_SCHEMA)
    table = table.replace_schema_metadata({b"s2p.schema_version": b"1"})
    pq.write_table(table, tmp_path / "shard-00000.parquet")  # as an older version wrote it
    assert "no content checksum" in shards.shard_damage(tmp_path / "shard-00000.parquet")
    assert not shards.is_complete_shard(tmp_path / "shard-00000.parquet")


def test_partial_writes_of_a_killed_run_are_removed(tmp_path):
    table = pa.Table.from_pylist(colour_rows(3), schema=shards.COLOR_SCHEMA)
    shards.write_shard(tmp_path / "shard-00000.parquet", table, "color", 2)
    left = [tmp_path / ".shard-00001.parquet.tmp-4242", tmp_path / "._manifest.json.tmp-7"]
    for path in left:
        path.write_bytes(b"half a file")
    assert shards.prepare_shard_dir(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.parquet"]
    left[0].write_bytes(b"a Dask worker killed mid-write")
    shards.write_manifest(tmp_path, "color")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_manifest.json", "shard-00000.parquet"]
