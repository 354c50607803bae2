"""Streaming training data: aligned colour / sketch / style shards -> tensors.

The stream is a pure function of (seed, rank, world size, DataLoader worker
count, batch size, step), so a resumed run skips to its step without decoding
anything it already trained on, and sees exactly the samples an uninterrupted
run would have seen.

How one epoch is laid out:
- a *unit* is one row group of the aligned shard sets (or one whole shard when
  the sets' row groups differ), the smallest thing read from disk;
- the units are permuted with (seed, epoch); their rows of the wanted split,
  in that order, are cut into `ranks * workers` contiguous, equal chunks
  (rank-major, then worker), so every row is read by exactly one consumer per
  epoch, epochs are the same length everywhere, and each consumer reads only
  the few units that overlap its chunk;
- a shuffle buffer (`train.shuffle_buffer` rows) reorders each chunk. The
  buffer runs first on row keys only, which fixes the emission order; rows are
  then read lazily, a unit at a time, and dropped once emitted, so memory
  holds about one buffer of encoded rows, never the dataset.
Decoding, crop and flip happen in the DataLoader workers, from random draws
made per (seed, epoch, unit) and indexed by row: augmentation depends on the
row and epoch, not on which worker happened to read it. Workers build whole
batches (`ShardStream.batches`) and hand each over as one compact block
(`Packed`: uint8 pixels, stored codes); the training process converts it to
float once per column.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.config import Config
from pipeline.images import decode_stored
from pipeline.layout import SHARD_SETS, Layout
from pipeline.shards import aligned_shards, read_aligned

log = logging.getLogger("s2p.train.loader")

COLUMNS = (["split", "color"], ["sketch"], ["style", "style_aug"])
# Bumped whenever the samples a (seed, step) gets change, so a checkpoint of an
# older stream is not resumed as if it were the same run. 2: augmentation draws
# per (seed, epoch, unit) instead of a generator per row.
STREAM_VERSION = 2


class DataError(ValueError):
    """Shards that cannot be trained on; the message names the file."""


@dataclass(frozen=True)
class Unit:
    shard: int  # index into the aligned shard list
    group: int | None  # row group index; None = the whole shard
    offset: int  # first row of the unit inside its shard


def shard_dirs(root: str | Path) -> list[Path]:
    return [Layout(root).shards(name) for name in SHARD_SETS]


def _row_groups(path: Path) -> tuple[int, list[int]]:
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet shard ({err})") from None
    return meta.num_rows, [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def index_units(root: str | Path, split: str) -> tuple[list, list[Unit], list[np.ndarray]]:
    """(aligned shards, units, row offsets of `split` inside each unit).

    Reads only Parquet footers and the colour set's `split` column.
    """
    dirs = shard_dirs(root)
    for d in dirs:
        if not d.is_dir():
            raise DataError(f"{d}: missing shard set (run the stage that writes it)")
    try:
        shards = aligned_shards(dirs)
    except FileNotFoundError as err:
        raise DataError(str(err)) from None
    if not shards:
        raise DataError(f"{dirs[0]}: no shards")
    units: list[Unit] = []
    rows: list[np.ndarray] = []
    for s, shard in enumerate(shards):
        layouts = [_row_groups(p) for p in shard.paths]
        for (n, _), p in zip(layouts[1:], shard.paths[1:]):
            if n != layouts[0][0]:
                raise DataError(f"{p}: {n} rows, expected {layouts[0][0]} as in {shard.paths[0]}")
        splits = np.asarray(
            pq.read_table(shard.paths[0], columns=["split"]).column("split").to_pylist()
        )
        groups = layouts[0][1]
        if all(layout[1] == groups for layout in layouts[1:]):
            bounds = np.concatenate([[0], np.cumsum(groups)]).astype(int)
            spans = [(g, bounds[g], bounds[g + 1]) for g in range(len(groups))]
        else:  # row groups differ between sets: read the shard as one unit
            spans = [(None, 0, layouts[0][0])]
        for g, lo, hi in spans:
            units.append(Unit(s, g, int(lo)))
            rows.append(np.flatnonzero(splits[lo:hi] == split).astype(np.int64))
    return shards, units, rows


def _seed(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(p) for p in parts]))


def shuffle_buffer_order(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """Order in which a streaming shuffle buffer of `buffer` slots emits items 0..n-1."""
    out = np.empty(n, dtype=np.int64)
    slots: list[int] = []
    k = 0
    for item in range(n):
        if len(slots) < buffer:
            slots.append(item)
            continue
        j = int(rng.integers(buffer))
        out[k] = slots[j]
        k += 1
        slots[j] = item
    tail = np.asarray(slots, dtype=np.int64)
    out[k:] = tail[rng.permutation(len(tail))]
    return out


def batches_taken(step: int, worker: int, workers: int) -> int:
    """Batches worker `worker` delivered in the first `step` steps (DataLoader
    takes batches from its workers round-robin)."""
    return max(0, (step - worker + workers - 1) // workers)


class ShardStream(IterableDataset):
    """Endless stream of training samples for one DDP rank.

    Each sample: sketch [1,H,W] and colour [3,H,W] float32 in [-1,1] (white
    paper = +1), style [D] (the target's own V(y), for the discriminator),
    reference [D] (the generator's style input: a distorted copy's code when
    `self_reference` is on, else `style`), flipped (whether sketch and colour
    were mirrored: `style` is the code of the unmirrored image) and id.
    """

    def __init__(self, root: str | Path, split: str, *, resolution: int, crop: int = 0,
                 flip: bool = False, self_reference: bool = False, seed: int = 0,
                 shuffle_buffer: int = 256, batch_size: int = 1, start_step: int = 0,
                 rank: int = 0, world: int = 1, style_dim: int = 4096):
        self.root = Path(root)
        self.split = split
        self.resolution = resolution
        self.crop = crop
        self.flip = flip
        self.self_reference = self_reference
        self.seed = seed
        self.buffer = shuffle_buffer
        self.batch_size = batch_size
        self.start_step = start_step
        self.rank, self.world = rank, world
        self.style_dim = style_dim
        self.shards, self.units, self.unit_rows = index_units(root, split)
        self.total = int(sum(len(r) for r in self.unit_rows))
        if self.total == 0:
            raise DataError(f"{shard_dirs(root)[0]}: no rows with split {split!r}")

    # -- the epoch plan (keys only, nothing decoded) ---------------------------
    def chunk_bounds(self, consumer: int, consumers: int) -> tuple[int, int]:
        return consumer * self.total // consumers, (consumer + 1) * self.total // consumers

    def epoch_keys(self, epoch: int, consumer: int, consumers: int) -> np.ndarray:
        """[(unit, row-in-unit)] this consumer emits in `epoch`, in emission order."""
        self._check_consumers(consumers)
        order = _seed(self.seed, epoch).permutation(len(self.units))
        lo, hi = self.chunk_bounds(consumer, consumers)
        keys, seen = [], 0
        for u in order:
            rows = self.unit_rows[u]
            a, b = max(lo - seen, 0), min(hi - seen, len(rows))
            if a < b:
                keys.append(np.stack([np.full(b - a, u), rows[a:b]], axis=1))
            seen += len(rows)
            if seen >= hi:
                break
        keys = np.concatenate(keys)
        emit = shuffle_buffer_order(len(keys), self.buffer, _seed(self.seed, epoch, consumer, 1))
        return keys[emit]

    def _check_consumers(self, consumers: int) -> None:
        if self.total < consumers:
            raise DataError(
                f"{shard_dirs(self.root)[0]}: {self.total} {self.split} row(s) cannot feed "
                f"{consumers} loader processes (ranks x workers); use fewer workers or more data"
            )

    # -- iteration ------------------------------------------------------------
    def _consumer(self) -> tuple[int, int, int, int]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # The DataLoader asks worker 0 first; a run resumed at step S must get
        # that batch from the worker that served step S originally.
        role = (worker + self.start_step) % workers
        return self.rank * workers + role, self.world * workers, role, workers

    def _rows(self) -> Iterator[tuple]:
        """This consumer's rows in stream order, decoded and augmented:
        (id, colour uint8 HxWx3, sketch uint8 HxW, style code, reference code, flipped)."""
        consumer, consumers, worker, workers = self._consumer()
        self._check_consumers(consumers)
        lo, hi = self.chunk_bounds(consumer, consumers)
        length = hi - lo
        skip = batches_taken(self.start_step, worker, workers) * self.batch_size
        epoch, pos = divmod(skip, length)
        while True:
            yielded = 0
            for row in self._epoch(epoch, consumer, consumers, pos):
                yielded += 1
                yield row
            if not yielded and pos == 0:
                raise DataError(f"{shard_dirs(self.root)[0]}: no decodable {self.split} rows "
                                f"for loader process {consumer} of {consumers}")
            epoch, pos = epoch + 1, 0

    def __iter__(self) -> Iterator[dict]:
        """One sample at a time (DataLoader(stream, batch_size=B) collates them)."""
        for row_id, colour, sketch, style, reference, flipped in self._rows():
            yield {
                "id": row_id,
                "sketch": to_tensor(sketch),
                "color": to_tensor(colour),
                "style": torch.from_numpy(style.astype(np.float32)),
                "reference": torch.from_numpy(reference.astype(np.float32)),
                "flipped": torch.tensor(flipped),
            }

    def batches(self) -> Iterator["Packed"]:
        """Whole batches of `batch_size` consecutive rows of the same stream
        `__iter__` yields, packed compactly (see `Packed`); `Packed.unpack()`
        gives exactly what default_collate makes of `batch_size` samples."""
        rows = self._rows()
        while True:
            yield Packed.of([next(rows) for _ in range(self.batch_size)])

    def _epoch(self, epoch: int, consumer: int, consumers: int, start: int) -> Iterator[tuple]:
        keys = self.epoch_keys(epoch, consumer, consumers)
        pending: dict[tuple[int, int], dict] = {}
        later = keys[start:]
        by_unit: dict[int, list[int]] = {}
        for u, r in later.tolist():
            by_unit.setdefault(u, []).append(r)
        for u, r in later.tolist():
            if (u, r) not in pending:
                pending.update(self._read_unit(u, by_unit.pop(u), epoch))
            row = self._decode(pending.pop((u, r)))
            if row is not None:
                yield row

    def _read_unit(self, u: int, wanted: list[int], epoch: int | None = None
                   ) -> dict[tuple[int, int], dict]:
        """The wanted rows of unit `u`, still encoded, each with its augmentation
        draws for `epoch` (None: no augmentation)."""
        unit = self.units[u]
        shard = self.shards[unit.shard]
        try:
            cols = read_aligned(shard, COLUMNS, unit.group)
        except ValueError as err:  # a missing column, ids that disagree
            raise DataError(str(err)) from None
        rows, n = sorted(set(wanted)), cols.num_rows
        if cols.column("style").null_count or cols.column("style_aug").null_count:
            # nulls are an error only in rows we read: take those, then check
            idx = pa.array(rows, type=pa.int64())
            cols, at = cols.take(idx), range(len(rows))
        else:  # the unit's own arrays, no copies (Arrow's take copies list columns slowly)
            at = rows
        style = _fixed_lists(cols.column("style"), self.style_dim, shard.paths[2])
        augs = _style_aug(cols.column("style_aug"), self.style_dim, shard.paths[2])
        ids, colours, sketches = (cols.column(k).to_pylist() for k in ("id", "color", "sketch"))
        draws = self._draws(epoch, u, n) if epoch is not None else None
        out = {}
        for j, r in zip(at, rows):
            out[(u, r)] = {
                "id": ids[j], "color": colours[j], "sketch": sketches[j],
                "style": style[j], "style_aug": augs[j], "where": shard.paths[0].name,
                "draws": None if draws is None else draws[r],
            }
        return out

    def _draws(self, epoch: int, u: int, n: int) -> np.ndarray:
        """[n, 4] uniforms in [0,1) for the n rows of unit `u` in `epoch`: crop
        y, crop x, flip, reference choice. One generator per (seed, epoch, unit)
        rather than per row: a row's augmentation still depends only on the
        row and the epoch, never on which loader process read it."""
        return _seed(self.seed, epoch, u, 3).random((n, 4))

    def _decode(self, row: dict) -> tuple | None:
        try:
            colour, sketch = decode_pair(row["color"], row["sketch"], self.resolution)
        except ValueError as err:
            log.warning("%s: row %s skipped: %s", row["where"], row["id"], err)
            return None
        draws = row["draws"]
        colour, sketch, flipped = augment_pair(colour, sketch, draws, self.crop, self.flip)
        style = row["style"]
        if self.self_reference:
            augs = row["style_aug"]
            if len(augs) == 0:
                raise DataError(
                    f"{row['where']}: row {row['id']} has no style_aug codes but "
                    "train.augmented_self_reference is on (rerun featurize with "
                    "featurize.augmented_copies >= 1)"
                )
            reference = augs[min(int(draws[3] * len(augs)), len(augs) - 1)]
        else:
            reference = style
        return row["id"], colour, sketch, style, reference, flipped


# uint8 -> float32 in [-1,1], value for value what `to_tensor` computes.
_LUT = np.empty(256, np.float32)
np.divide(np.arange(256, dtype=np.uint8), np.float32(127.5), out=_LUT, casting="unsafe")
_LUT -= 1.0


class Packed:
    """One batch as it crosses from a loader worker to the training process:
    images as uint8 and codes as stored (float16), 3x fewer bytes than float32
    tensors, all in one bytearray. A bytearray pickles 15x faster than a numpy
    array of the same bytes, and through the worker's pipe it beats a
    shared-memory tensor (fresh pages to fault in, a file descriptor to pass,
    per tensor). The float conversion happens once per column in `unpack`, in
    the training process."""

    def __init__(self, ids: list, data: bytearray, shape: tuple[int, int, int, int, str]):
        self.ids, self.data, self.shape = ids, data, shape

    @classmethod
    def of(cls, rows: list[tuple]) -> "Packed":
        n = len(rows)
        h, w = rows[0][2].shape
        d = len(rows[0][3])
        code = np.result_type(*(r[k].dtype for r in rows for k in (3, 4)))
        px = n * h * w
        data = bytearray(px * 4 + 2 * n * d * code.itemsize + n)
        block = np.frombuffer(data, np.uint8)
        colour = block[:px * 3].reshape(n, h, w, 3)
        sketch = block[px * 3:px * 4].reshape(n, h, w)
        codes = block[px * 4:-n].view(code).reshape(2, n, d)
        ids, colours, sketches, styles, references, flips = zip(*rows)
        np.stack(colours, out=colour)  # one call per column, not one per row
        np.stack(sketches, out=sketch)
        np.stack(styles + references, out=codes.reshape(2 * n, d))
        block[-n:] = flips
        return cls(list(ids), data, (n, h, w, d, code.str))

    def unpack(self, pin: bool = False) -> dict:
        """The batch default_collate makes of the same rows: sketch [B,1,H,W] and
        colour [B,3,H,W] float32 in [-1,1], style and reference [B,D] float32,
        flipped bool [B], id (list); all float tensors are views of one block."""
        n, h, w, d, code = self.shape
        px = n * h * w
        out = torch.empty(px * 4 + 2 * n * d, dtype=torch.float32, pin_memory=pin)
        f = out.numpy()
        src = np.frombuffer(self.data, np.uint8)
        cv2.LUT(src[px * 3:px * 4].reshape(n, h * w), _LUT, dst=f[:px].reshape(n, h * w))
        chw = np.ascontiguousarray(src[:px * 3].reshape(n, h * w, 3).transpose(0, 2, 1))
        cv2.LUT(chw.reshape(n * 3, h * w), _LUT, dst=f[px:px * 4].reshape(n * 3, h * w))
        _widen(src[px * 4:-n].view(np.dtype(code)), out[px * 4:])
        flipped = torch.from_numpy(src[-n:].view(np.bool_).copy())
        if pin:
            flipped = flipped.pin_memory()
        codes = out[px * 4:].view(2, n, d)
        return {"id": self.ids, "sketch": out[:px].view(n, 1, h, w),
                "color": out[px:px * 4].view(n, 3, h, w),
                "style": codes[0], "reference": codes[1], "flipped": flipped}

    def pin_memory(self) -> dict:  # DataLoader(pin_memory=True) calls this in its pin thread
        return self.unpack(pin=True)


def _widen(codes: np.ndarray, out: torch.Tensor) -> None:
    """out[:] = codes (float16 -> float32, exact). torch converts with F16C, 7x
    faster than numpy, on one thread when a call has under 32768 elements
    (its parallel grain): no thread-pool hand-off for a job this small."""
    src = torch.from_numpy(codes)
    for i in range(0, len(src), 32767):
        out[i:i + 32767].copy_(src[i:i + 32767])


class Batches(IterableDataset):
    """`stream.batches()` as a dataset: use DataLoader(Batches(stream),
    batch_size=None, collate_fn=keep)."""

    def __init__(self, stream: ShardStream):
        self.stream = stream

    def __iter__(self) -> Iterator[Packed]:
        return self.stream.batches()


def keep(item):
    """collate_fn that hands a `Packed` batch over as it is."""
    return item


class BatchLoader:
    """Iterable over unpacked batches of a DataLoader over `Batches`."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            yield batch.unpack() if isinstance(batch, Packed) else batch


def _fixed_lists(col, dim: int, path: Path) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise DataError(f"{path}: null style codes")
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    if len(arr) and flat.size != len(arr) * dim:
        raise DataError(f"{path}: style codes of size {flat.size // len(arr)}, "
                        f"model.style_dim is {dim}")
    return flat.reshape(len(arr), dim)


def _style_aug(col, dim: int, path: Path) -> list[np.ndarray]:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = arr.offsets.to_numpy()
    codes = _fixed_lists(arr.flatten(), dim, path) if len(arr.flatten()) else np.zeros((0, dim))
    base = offsets[0]
    return [codes[offsets[i] - base:offsets[i + 1] - base] for i in range(len(arr))]


def decode_pair(colour_png: bytes, sketch_png: bytes,
                resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 HxWx3, grey uint8 HxW), both resized to resolution² if needed."""
    try:
        colour = decode_stored(colour_png, 3)
    except ValueError:
        raise ValueError("colour image does not decode") from None
    try:
        sketch = decode_stored(sketch_png, 1)
    except ValueError:
        raise ValueError("sketch does not decode") from None
    if sketch.shape != colour.shape[:2]:
        raise ValueError(f"sketch {sketch.shape} and colour {colour.shape[:2]} differ in size")
    if colour.shape[:2] != (resolution, resolution):
        colour = cv2.resize(colour, (resolution, resolution), interpolation=cv2.INTER_AREA)
        sketch = cv2.resize(sketch, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return colour, sketch


def augment_pair(colour: np.ndarray, sketch: np.ndarray, draws, crop: int,
                 flip: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """One random crop window and one flip decision, applied to both images;
    returns whether they were flipped (D's target is V of the unflipped image).
    `draws`: uniforms in [0,1) (crop y, crop x, flip), or None for neither."""
    if draws is None:
        return colour, sketch, False
    if crop:
        h, w = sketch.shape
        y = min(int(draws[0] * (h - crop + 1)), h - crop)
        x = min(int(draws[1] * (w - crop + 1)), w - crop)
        colour, sketch = colour[y:y + crop, x:x + crop], sketch[y:y + crop, x:x + crop]
    flipped = bool(flip and draws[2] < 0.5)
    if flipped:  # cv2.flip: the bytes of img[:, ::-1], without numpy's slow reversed copy
        colour, sketch = cv2.flip(colour, 1), cv2.flip(sketch, 1)
    return colour, sketch, flipped


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxW or HxWxC -> float32 [C,H,W] in [-1,1].

    In numpy: torch's element-wise ops on small tensors hand out work to its
    thread pool, which costs more than the work itself on a busy CPU."""
    arr = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
    out = np.empty(arr.shape, np.float32)
    np.divide(arr, np.float32(127.5), out=out, casting="unsafe")
    out -= 1.0
    return torch.from_numpy(out)


def worker_context():
    """Workers start from a clean forkserver, not a fork of this process: by
    now this process runs threads (OpenCV's and Arrow's pools, Prefect's), and a
    fork copies their locks held but not the threads, which can deadlock a
    worker. The server imports this module once; workers fork from it cheaply."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def make_loader(cfg: Config, *, start_step: int = 0, rank: int = 0, world: int = 1,
                pin_memory: bool = False) -> BatchLoader:
    """The training batches of one rank, positioned at `start_step`: the same
    stream as DataLoader(ShardStream, batch_size=B), built a batch at a time."""
    t = cfg.train
    stream = ShardStream(
        cfg.data_root, "train", resolution=cfg.data.resolution, crop=t.random_crop,
        flip=t.flip, self_reference=t.augmented_self_reference, seed=t.seed,
        shuffle_buffer=t.shuffle_buffer, batch_size=t.batch_size, start_step=start_step,
        rank=rank, world=world, style_dim=cfg.model.style_dim,
    )
    return BatchLoader(DataLoader(
        Batches(stream), batch_size=None, collate_fn=keep, num_workers=t.num_workers,
        pin_memory=pin_memory, persistent_workers=False,
        prefetch_factor=4 if t.num_workers else None,
        multiprocessing_context=worker_context() if t.num_workers else None,
        # Own generator: creating the iterator must not draw from the global
        # torch RNG, or a resumed run's RNG state would differ from a fresh one.
        generator=torch.Generator().manual_seed(t.seed),
    ))


def fixed_rows(root: str | Path, n: int, resolution: int, style_dim: int = 4096) -> dict:
    """The first `n` rows of val (then test, then train), decoded and not
    augmented: the fixed batch every sample grid shows."""
    picked: list[dict] = []
    for split in ("val", "test", "train"):
        if len(picked) >= n:
            break
        try:
            stream = ShardStream(root, split, resolution=resolution, style_dim=style_dim)
        except DataError:
            continue
        for u, rows in enumerate(stream.unit_rows):
            if len(rows) == 0:
                continue
            for row in stream._read_unit(u, rows[: n - len(picked)].tolist()).values():
                try:
                    colour, sketch = decode_pair(row["color"], row["sketch"], resolution)
                except ValueError:
                    continue
                picked.append({"color": colour, "sketch": sketch, "style": row["style"]})
            if len(picked) >= n:
                break
    if not picked:
        raise DataError(f"{shard_dirs(root)[0]}: no decodable rows for the sample grid")
    return {
        "colour_u8": np.stack([p["color"] for p in picked]),
        "sketch": torch.stack([to_tensor(p["sketch"]) for p in picked]),
        "color": torch.stack([to_tensor(p["color"]) for p in picked]),
        "style": torch.from_numpy(np.stack([p["style"] for p in picked]).astype(np.float32)),
    }
