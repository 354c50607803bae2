"""The training loader: disjoint coverage, seeded shuffling, resume position,
aligned augmentation, the reference code, bad rows and bad shard sets."""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.shards import iter_rows
from pipeline.train.loader import (
    BatchLoader,
    Batches,
    DataError,
    ShardStream,
    batches_taken,
    keep,
    shuffle_buffer_order,
    worker_context,
)
from synthetic import write_fake_shards

DIM = 32  # style code length in these tests (the real one is 4096)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("loader") / "data"
    rows = write_fake_shards(root, 60, 32, dim=DIM, aug=2, sketch="grey", shard_rows=10,
                             row_group_rows=4)
    return root, rows


@pytest.fixture(scope="module")
def all_train(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loader_all") / "data"
    write_fake_shards(root, 40, 16, dim=DIM, shard_rows=8, row_group_rows=3, splits=(1.0, 0.0))
    return root


def stream(root, **kw) -> ShardStream:
    opts = dict(resolution=kw.pop("resolution", 16 if "all" in str(root) else 32), style_dim=DIM,
                shuffle_buffer=8)
    opts.update(kw)
    return ShardStream(root, opts.pop("split", "train"), **opts)


def _ids(loader, n: int) -> list[str]:
    out = []
    for batch in loader:
        out += batch["id"]
        if len(out) >= n:
            return out[:n]
    raise AssertionError("stream ended")


def test_every_row_once_per_epoch_across_two_workers_and_two_ranks(all_train):
    # 40 rows, 4 consumers (2 ranks x 2 workers): 10 rows each per epoch, and the
    # DataLoader takes batches round-robin, so 20 samples per rank = one epoch.
    per_rank = []
    for rank in range(2):
        ds = stream(all_train, rank=rank, world=2, seed=3)
        loader = DataLoader(ds, batch_size=1, num_workers=2,
                            multiprocessing_context=worker_context())
        per_rank.append(_ids(loader, 40))
    expected = {r["id"] for r in iter_rows([all_train / "shards/color"], [["split"]])}
    assert len(expected) == 40
    for epoch in range(2):
        seen = [i for ids in per_rank for i in ids[epoch * 20:(epoch + 1) * 20]]
        assert Counter(seen) == Counter(expected), f"epoch {epoch} not an exact cover"
    assert not set(per_rank[0][:20]) & set(per_rank[1][:20])
    # a new shuffle per epoch
    assert per_rank[0][:20] != per_rank[0][20:]


def test_split_column_partitions_the_rows(data):
    root, rows = data
    for split in ("train", "val", "test"):
        want = [r["id"] for r in rows if r["split"] == split]
        if not want:
            continue
        ds = stream(root, split=split)
        got = [s["id"] for _, s in zip(range(len(want)), ds)]
        assert sorted(got) == sorted(want) and ds.total == len(want)


def test_shuffle_is_seeded_and_buffer_bounded():
    a = shuffle_buffer_order(100, 10, np.random.default_rng(1))
    b = shuffle_buffer_order(100, 10, np.random.default_rng(1))
    c = shuffle_buffer_order(100, 10, np.random.default_rng(2))
    assert sorted(a.tolist()) == list(range(100))
    assert (a == b).all() and not (a == c).all()
    # an item can leave the buffer no earlier than `buffer` places before its arrival
    assert all(pos >= item - 10 for pos, item in enumerate(a.tolist()))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_position_continues_the_same_stream(data, workers):
    root, _ = data
    batch, skip, take = 4, 5, 10  # 5 steps of 4 > one epoch of ~47 rows: crosses it

    def batches(start):
        ds = stream(root, seed=7, crop=16, flip=True, self_reference=True,
                    batch_size=batch, start_step=start)
        ctx = worker_context() if workers else None
        it = iter(DataLoader(ds, batch_size=batch, num_workers=workers,
                             multiprocessing_context=ctx))
        return [next(it) for _ in range(take - start)]

    full, resumed = batches(0), batches(skip)
    for a, b in zip(full[skip:], resumed):
        assert a["id"] == b["id"]
        for key in ("sketch", "color", "style", "reference"):
            assert torch.equal(a[key], b[key])
    assert batches_taken(5, 0, 2) == 3 and batches_taken(5, 1, 2) == 2


def _digest(batch: dict) -> str:
    h = hashlib.sha256(repr(batch["id"]).encode())
    for key in ("sketch", "color", "style", "reference", "flipped"):
        t = batch[key]
        h.update(f"{key}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("workers,start", [(0, 0), (0, 3), (2, 0), (2, 5)])
def test_whole_batches_are_the_per_row_stream_bit_for_bit(data, workers, start):
    # make_loader's path (batches built in the worker, floats made once per
    # column in this process) against DataLoader(ShardStream, batch_size=B):
    # the training stream is a function of (seed, step), resume relies on it.
    root, _ = data
    batch, n = 4, 30  # 30 batches of 4 > two epochs of ~47 rows

    def make(**kw):
        return stream(root, seed=11, crop=16, flip=True, self_reference=True,
                      batch_size=batch, start_step=start, **kw)

    ctx = worker_context() if workers else None
    rows = DataLoader(make(), batch_size=batch, num_workers=workers, multiprocessing_context=ctx)
    whole = BatchLoader(DataLoader(Batches(make()), batch_size=None, collate_fn=keep,
                                   num_workers=workers, multiprocessing_context=ctx))
    a = [_digest(b) for _, b in zip(range(n), rows)]
    b = [_digest(b) for _, b in zip(range(n), whole)]
    assert a == b and len(set(a)) == n


def test_crop_and_flip_are_applied_identically(data):
    root, _ = data
    originals = {r["id"]: r for r in iter_rows([root / "shards/color"], [["color"]])}
    ds = stream(root, crop=16, flip=True, seed=1)
    flips, offsets = Counter(), set()
    for i, s in zip(range(40), ds):
        color = ((s["color"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        sketch = ((s["sketch"][0].numpy() + 1) * 127.5).round().astype(np.uint8)
        assert color.shape == (16, 16, 3) and sketch.shape == (16, 16)
        # the fixture's sketch is the grey of its colour image, pixel for pixel
        assert np.array_equal(cv2.cvtColor(color, cv2.COLOR_RGB2GRAY), sketch)
        full = cv2.cvtColor(cv2.imdecode(np.frombuffer(originals[s["id"]]["color"], np.uint8),
                                         cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        found = [(f, y, x) for f in (False, True) for y in range(17) for x in range(17)
                 if np.array_equal((full[:, ::-1] if f else full)[y:y + 16, x:x + 16], color)]
        assert found, "output is not a crop of the source image"
        flips[found[0][0]] += 1
        offsets.add(found[0][1:])
    assert flips[True] and flips[False]
    assert len(offsets) > 5


def test_reference_code_comes_from_style_aug_when_asked(data):
    root, _ = data
    codes = {}
    for r in iter_rows([root / "shards/style"]):
        codes[r["id"]] = (np.asarray(r["style"], np.float32),
                          [np.asarray(a, np.float32) for a in r["style_aug"]])
    picked = Counter()
    for self_ref in (False, True):
        for _, s in zip(range(30), stream(root, self_reference=self_ref, seed=2)):
            style, augs = codes[s["id"]]
            assert np.array_equal(s["style"].numpy(), style)
            if not self_ref:
                assert np.array_equal(s["reference"].numpy(), style)
            else:
                match = [k for k, a in enumerate(augs) if np.array_equal(s["reference"].numpy(), a)]
                assert match and not np.array_equal(style, s["reference"].numpy())
                picked[match[0]] += 1
    assert set(picked) == {0, 1}  # both of the K=2 copies get used


def test_undecodable_row_is_skipped_and_logged(tmp_path, caplog):
    root = tmp_path / "data"
    rows = write_fake_shards(root, 12, 16, dim=DIM, splits=(1.0, 0.0), corrupt=(5,))
    ds = stream(root, resolution=16)
    with caplog.at_level(logging.WARNING, logger="s2p.train.loader"):
        got = [s["id"] for _, s in zip(range(11), ds)]
    assert rows[5]["id"] not in got and len(set(got)) == 11
    assert any(rows[5]["id"] in m and "shard-00000.parquet" in m for m in caplog.messages)


def test_bad_shard_sets_fail_with_the_file_named(tmp_path):
    root = tmp_path / "data"
    write_fake_shards(root, 8, 16, dim=DIM)
    with pytest.raises(DataError, match="style_dim"):
        ShardStream(root, "train", resolution=16, style_dim=DIM + 1).__iter__().__next__()
    (root / "shards/style/shard-00000.parquet").unlink()
    with pytest.raises(DataError, match="shards/style"):
        stream(root, resolution=16)
    with pytest.raises(DataError, match="shards/color"):
        stream(tmp_path / "nothing", resolution=16)
