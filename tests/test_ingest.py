"""Ingest on real-image folders: hostile inputs, dedupe, resume, metrics."""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import tiny_config
from pipeline import ingest as ing
from pipeline.images import Rejected, decode_rgb, fit_to_square, prepare_illustration
from pipeline.shards import iter_rows, shard_paths


def colourful(seed: int, h: int = 48, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 255, 3)
    img[h // 3 :, : w // 2] = rng.integers(0, 255, 3)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    return img


def png_bytes(rgb: np.ndarray, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def absurd_png(width: int, height: int) -> bytes:
    """A valid PNG header that declares an enormous size (no pixel data worth it)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


MAX_BYTES = 1_000_000  # ingest.max_bytes in these tests
BAD_UTF8 = b"\xffname"  # a file-name part that is not valid UTF-8 (Linux allows any bytes)


def mark_encrypted(archive: Path, member: str) -> None:
    """Set the 'encrypted' flag of one zip member (zipfile cannot write one):
    reading it then needs a password."""
    data = bytearray(archive.read_bytes())
    name = member.encode()
    for signature, flags_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        at = data.find(signature)
        while at >= 0:
            if data[at + name_at : at + name_at + len(name)] == name:
                data[at + flags_at] |= 0x1
            at = data.find(signature, at + 1)
    archive.write_bytes(bytes(data))


@pytest.fixture
def hostile_folder(tmp_path):
    root = tmp_path / "illustrations"
    (root / "nested").mkdir(parents=True)
    good = colourful(1)
    (root / "good.png").write_bytes(png_bytes(good))
    (root / "nested" / "good2.jpg").write_bytes(cv2.imencode(".jpg", colourful(2)[..., ::-1])[1].tobytes())
    (root / "zz_duplicate.png").write_bytes(png_bytes(good))
    ok, bmp = cv2.imencode(".bmp", good[..., ::-1])  # the same pixels in another format
    (root / "zz_same_pixels.bmp").write_bytes(bmp.tobytes())
    jpeg = cv2.imencode(".jpg", colourful(3)[..., ::-1])[1].tobytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "zero.png").write_bytes(b"")
    (root / "text.png").write_text("this is not an image\n")
    (root / "tiny.png").write_bytes(png_bytes(colourful(4, 1, 1)))
    buf = io.BytesIO()
    Image.fromarray(colourful(5)).convert("CMYK").save(buf, "JPEG")
    (root / "cmyk.jpg").write_bytes(buf.getvalue())
    ok, png16 = cv2.imencode(".png", colourful(6)[..., ::-1].astype(np.uint16) * 257)
    (root / "deep16.png").write_bytes(png16.tobytes())
    rgba = np.dstack([colourful(7), np.full((48, 40), 128, np.uint8)])
    (root / "alpha.png").write_bytes(png_bytes(rgba, "RGBA"))
    (root / "palette.png").write_bytes(png_bytes(colourful(8), "P"))
    frames = [Image.fromarray(colourful(9 + i)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    (root / "animated.gif").write_bytes(buf.getvalue())
    grey = cv2.cvtColor(colourful(12), cv2.COLOR_RGB2GRAY)
    (root / "grey_photo.jpg").write_bytes(cv2.imencode(".jpg", grey)[1].tobytes())
    (root / "absurd.png").write_bytes(absurd_png(200_000, 200_000))
    (root / "notes.txt").write_text("not an image")
    with zipfile.ZipFile(root / "pack.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner/zipped.png", png_bytes(colourful(13)))
        zf.writestr("inner/readme.md", "not an image")
        zf.writestr("inner/bomb.png", b"\0" * (2 * MAX_BYTES))  # a few kB compressed
        zf.writestr("inner/encrypted.png", png_bytes(colourful(14)))
    mark_encrypted(root / "pack.zip", "inner/encrypted.png")
    (root / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with tarfile.open(root / "pack.tar", "w") as tf:
        data = png_bytes(colourful(15))
        member = tarfile.TarInfo("tarred.png")
        member.size = len(data)
        tf.addfile(member, io.BytesIO(data))
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "tarred.png"
        tf.addfile(link)
    with open(root / "sparse.png", "wb") as fh:  # 1 GiB on paper, nothing on disk
        fh.truncate(2**30)
    # Names that are legal but awkward: "::" outside an archive, bytes that are not UTF-8.
    (root / "a::b.png").write_bytes(png_bytes(colourful(16)))
    (root / "dir::x").mkdir()
    (root / "dir::x" / "in.png").write_bytes(png_bytes(colourful(17)))
    raw_root = os.fsencode(root)
    (Path(os.fsdecode(raw_root + b"/" + BAD_UTF8 + b".png"))).write_bytes(png_bytes(colourful(18)))
    os.mkdir(raw_root + b"/" + BAD_UTF8 + b"_dir")
    Path(os.fsdecode(raw_root + b"/" + BAD_UTF8 + b"_dir/in.png")).write_bytes(png_bytes(colourful(19)))
    # Things that are not files to read.
    (root / "linked_dir").symlink_to(root / "nested", target_is_directory=True)
    (root / "dangling.png").symlink_to(root / "missing.png")
    (root / "zz_linked_file.png").symlink_to(root / "nested" / "good2.jpg")  # read: a duplicate
    os.mkfifo(root / "pipe.png")  # reading it would block forever
    (root / "locked").mkdir()  # made unreadable by the test (root may read anything)
    (root / "locked" / "hidden.png").write_bytes(png_bytes(colourful(20)))
    return root


ESC = r"\xff"  # how BAD_UTF8 is recorded
EXPECTED_KEPT = {"good.png", "nested/good2.jpg", "cmyk.jpg", "deep16.png", "alpha.png",
                 "palette.png", "pack.zip::inner/zipped.png", "pack.tar::tarred.png", "a::b.png",
                 "dir::x/in.png", f"{ESC}name.png", f"{ESC}name_dir/in.png"}
EXPECTED_REJECTED = {
    "zz_duplicate.png": "duplicate of ",
    "zz_same_pixels.bmp": "duplicate of ",
    "zz_linked_file.png": "duplicate of ",
    "truncated.jpg": "cannot decode",
    "zero.png": "empty file",
    "text.png": "cannot decode (not an image format",
    "tiny.png": "too small",
    "animated.gif": "animated",
    "grey_photo.jpg": "greyscale",
    "absurd.png": "declared size",
    "broken.zip": "unreadable archive",
    "notes.txt": "not an image file",
    "pack.zip::inner/readme.md": "not an image file",
    "pack.zip::inner/bomb.png": f"too large (2000000 bytes > ingest.max_bytes={MAX_BYTES})",
    "pack.zip::inner/encrypted.png": "unreadable archive member (RuntimeError",
    "pack.tar::link.png": "archive member is not a regular file",
    "sparse.png": f"too large ({2**30} bytes",
    "linked_dir": "symbolic link to a folder",
    "dangling.png": "broken symbolic link",
    "pipe.png": "not a regular file",
    "locked": "unreadable folder (Permission denied)",
}


def _name(source: str, root: Path) -> str:
    return source.removeprefix(f"{root}/")


def run_ingest(cfg):
    from flows.ingest import ingest

    return ingest(cfg)


def lock_folder(monkeypatch):
    """`locked/` cannot be listed, as for a user without the permission."""
    real = os.scandir

    def scandir(path="."):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith("/locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def hostile_config(tmp_path, folder, **data):
    return tiny_config(tmp_path, ingest={"source": "folder", "folder": str(folder),
                                         "max_bytes": MAX_BYTES}, data={"shard_rows": 5, **data})


def test_hostile_folder_all_recorded_none_fatal(tmp_path, hostile_folder, monkeypatch):
    lock_folder(monkeypatch)
    cfg = hostile_config(tmp_path, hostile_folder)
    metrics = run_ingest(cfg)
    rows = list(iter_rows([cfg.data_root / "shards" / "color"]))
    kept = {_name(r["source"], hostile_folder) for r in rows}
    assert kept == EXPECTED_KEPT
    rejects = pq.read_table(cfg.data_root / "rejects.parquet").to_pylist()
    by_name = {_name(r["path"], hostile_folder): r["reason"] for r in rejects}
    assert set(by_name) == set(EXPECTED_REJECTED)
    for name, reason in EXPECTED_REJECTED.items():
        assert reason in by_name[name], (name, by_name[name])
        assert " at 0x" not in by_name[name] and "\n" not in by_name[name]
    assert metrics["images"] == len(EXPECTED_KEPT)
    assert metrics["rejected"] == len(EXPECTED_REJECTED)
    for row in rows:
        assert (row["width"], row["height"]) == (32, 32)
    on_disk = json.loads((cfg.data_root / "metrics" / "ingest.json").read_text())
    assert on_disk["images"] == len(EXPECTED_KEPT)


def test_every_file_is_ingested_or_rejected(tmp_path, hostile_folder, monkeypatch):
    """accepted + rejected = the files under the folder (and the members of its
    archives), counted independently of ingest."""
    found = 0
    for dirpath, dirnames, filenames in os.walk(hostile_folder):
        if dirpath.endswith("/locked"):
            found += 1 - len(filenames)  # one reject for the folder it cannot list
        found += sum(Path(dirpath, d).is_symlink() for d in dirnames)
        for name in filenames:
            path = Path(dirpath, name)
            if name.endswith(".zip") and zipfile.is_zipfile(path):
                found += len(zipfile.ZipFile(path).infolist()) - 1
            elif name.endswith(".tar"):
                found += len(tarfile.open(path).getmembers()) - 1
            found += 1
    lock_folder(monkeypatch)
    metrics = run_ingest(hostile_config(tmp_path, hostile_folder))
    assert metrics["images"] + metrics["rejected"] == found == 33


def test_reject_reasons_and_shards_are_reproducible(tmp_path, hostile_folder, monkeypatch):
    """Two ingests of the same folder from scratch write the same bytes."""
    lock_folder(monkeypatch)
    cfg = hostile_config(tmp_path, hostile_folder)
    outputs = ["rejects.parquet", *(f"shards/color/shard-0000{i}.parquet" for i in range(3))]
    run_ingest(cfg)
    first = {name: (cfg.data_root / name).read_bytes() for name in outputs}
    shutil.rmtree(cfg.data_root)
    run_ingest(cfg)
    assert first == {name: (cfg.data_root / name).read_bytes() for name in outputs}


def test_missing_folder_is_one_line_before_any_work(tmp_path):
    from pipeline.config import ConfigError

    cfg = hostile_config(tmp_path, tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"ingest.folder: .*nowhere: no such folder"):
        run_ingest(cfg)
    assert not cfg.data_root.exists()


def test_max_pixels_is_the_only_pixel_limit():
    """Above Pillow's own bomb limit (~89.5 M pixels) the param still decides."""
    header = absurd_png(9500, 9500)  # 90.25 M pixels
    with pytest.raises(Rejected, match="exceeds ingest.max_pixels=90000000"):
        decode_rgb(header, 90_000_000)
    with pytest.raises(Rejected) as err:
        decode_rgb(header, 100_000_000)  # allowed: decoding is tried (and the data is short)
    assert "declared size" not in str(err.value) and "cannot decode" in str(err.value)


def test_alpha_is_composited_over_white():
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent
    rgb = decode_rgb(png_bytes(rgba, "RGBA"), 10**6)
    assert (rgb == 255).all()


def test_sixteen_bit_png_scaled_not_clipped():
    img = np.full((20, 20, 3), 32768, np.uint16)
    rgb = decode_rgb(cv2.imencode(".png", img)[1].tobytes(), 10**6)
    assert rgb.dtype == np.uint8 and abs(int(rgb[0, 0, 0]) - 128) <= 1


def test_resize_policies():
    wide = colourful(3, 40, 80)
    assert fit_to_square(wide, 32, "crop").shape == (32, 32, 3)
    padded = fit_to_square(wide, 32, "pad")
    assert padded.shape == (32, 32, 3) and (padded[0] == 255).all()  # white band on top
    with pytest.raises(Rejected, match="too small"):
        prepare_illustration(png_bytes(colourful(1, 10, 10)), 32, "crop", 16, 0.03, 10**6)


def folder_of_images(tmp_path, count: int, seed: int, shard_rows: int):
    """`count` distinct colourful PNGs in tmp_path/in, and a config that ingests them."""
    (tmp_path / "in").mkdir()
    for i in range(count):
        (tmp_path / "in" / f"img{i:02d}.png").write_bytes(png_bytes(colourful(seed + i)))
    return tiny_config(tmp_path, ingest={"source": "folder", "folder": str(tmp_path / "in")},
                       data={"shard_rows": shard_rows})


def test_resume_after_crash_keeps_done_shards(tmp_path, monkeypatch):
    cfg = folder_of_images(tmp_path, 10, seed=100, shard_rows=3)
    reference = run_ingest(cfg)
    shard_dir = cfg.data_root / "shards" / "color"
    first = {p.name: p.read_bytes() for p in shard_paths(shard_dir)}
    assert len(first) == 4

    # Crash while writing the third shard: earlier shards stay, no partial file.
    for p in shard_paths(shard_dir)[2:]:
        p.unlink()
    real_write = ing.write_colour_shard
    calls = []

    def crash_on_third(job, *args):
        index = int(job.name.removeprefix("shard-").removesuffix(".parquet"))
        calls.append(index)
        if index == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_write(job, *args)

    monkeypatch.setattr(ing, "write_colour_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(cfg)
    assert calls == [2, 3]
    assert [p.name for p in shard_paths(shard_dir)] == list(first)[:3]
    assert not list(shard_dir.glob(".*tmp*"))

    monkeypatch.setattr(ing, "write_colour_shard", real_write)
    before = {p.name: p.stat().st_mtime_ns for p in shard_paths(shard_dir)}
    resumed = run_ingest(cfg)
    after = {p.name: p.read_bytes() for p in shard_paths(shard_dir)}
    assert after == first  # byte-identical to the uninterrupted run
    assert all(p.stat().st_mtime_ns == before[p.name] for p in shard_paths(shard_dir)[:3])
    assert resumed["images"] == reference["images"] == 10
    assert resumed["inputs_processed_this_run"] == 1


def test_changed_params_invalidate_shards(tmp_path):
    run_ingest(folder_of_images(tmp_path, 4, seed=200, shard_rows=2))
    bigger = tiny_config(tmp_path, ingest={"source": "folder", "folder": str(tmp_path / "in")},
                         data={"shard_rows": 2, "resolution": 48})
    metrics = run_ingest(bigger)
    assert metrics["inputs_processed_this_run"] == 4
    assert {r["width"] for r in iter_rows([bigger.data_root / "shards" / "color"])} == {48}


def test_damaged_shard_and_partial_writes_are_repaired_on_resume(tmp_path):
    cfg = folder_of_images(tmp_path, 6, seed=300, shard_rows=2)
    run_ingest(cfg)
    shard_dir = cfg.data_root / "shards" / "color"
    good = {p.name: p.read_bytes() for p in shard_paths(shard_dir)}
    damaged = bytearray(good["shard-00001.parquet"])
    damaged[len(damaged) // 3] ^= 0xFF  # inside a data page: the footer still reads
    (shard_dir / "shard-00001.parquet").write_bytes(bytes(damaged))
    (shard_dir / ".shard-00002.parquet.tmp-4242").write_bytes(b"left by kill -9")

    metrics = run_ingest(cfg)
    assert {p.name: p.read_bytes() for p in shard_paths(shard_dir)} == good
    assert metrics["inputs_processed_this_run"] == 4  # shard 1 and the ones after it
    assert not list(shard_dir.glob(".*"))


RUNNERS = ({"kind": "inprocess"}, {"kind": "local_dask", "workers": 3},
           {"kind": "dask_address", "address": "tcp://10.0.0.1:8786"})


def test_runner_never_enters_a_fingerprint(tmp_path):
    """Switching ingest to Dask (or another window) must not change its shards'
    fingerprints, or every downstream stage would re-run (issue 11, item 7)."""
    from pipeline import featurize
    from pipeline.sketch import make_extractor

    cfgs = [tiny_config(tmp_path, ingest={"runner": r, "chunks_in_flight": 1 + i},
                        extract={"runner": r, "shards_in_flight": 1 + i, "method": "classical"},
                        featurize={"runner": r})
            for i, r in enumerate(RUNNERS)]
    prints = {tuple(job.fingerprint for job in ing.plan_jobs(cfg)[0]) for cfg in cfgs}
    assert len(prints) == 1 and all(prints.pop())
    assert len({json.dumps(make_extractor(c.extract).describe(), sort_keys=True) for c in cfgs}) == 1
    assert len({json.dumps(featurize.settings(c.featurize), sort_keys=True) for c in cfgs}) == 1
    # What the output depends on still counts.
    other = tiny_config(tmp_path, ingest={"min_colourfulness": 0.5})
    assert ing.plan_jobs(other)[0][0].fingerprint != ing.plan_jobs(cfgs[0])[0][0].fingerprint


def test_dask_runner_writes_the_same_colour_shards(tmp_path):
    """The whole ingest stage on a local Dask cluster writes byte-identical shards."""
    local = tiny_config(tmp_path / "a")
    dask = tiny_config(tmp_path / "b", ingest={"runner": {"kind": "local_dask", "workers": 1}})
    run_ingest(local), run_ingest(dask)
    a, b = (sorted((c.data_root / "shards" / "color").glob("shard-*.parquet")) for c in (local, dask))
    assert [p.name for p in a] == [p.name for p in b] and len(a) >= 2
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def test_chroma_equals_the_per_pixel_max_minus_min_formula():
    # Ingest's colourfulness gate; channel planes instead of a 3-wide reduction must
    # not move any image across `ingest.min_colourfulness`: equal bit for bit.
    from pipeline.images import chroma

    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (64, 64, 3), (513, 517, 3), (768, 640, 3)]:
        for low, high in [(0, 256), (100, 110), (0, 8)]:
            rgb = rng.integers(low, high, shape, dtype=np.uint8)
            wide = rgb.astype(np.int16)
            assert chroma(rgb) == float((wide.max(axis=2) - wide.min(axis=2)).mean() / 255.0)
    assert chroma(np.full((8, 8, 3), 77, np.uint8)) == 0.0
