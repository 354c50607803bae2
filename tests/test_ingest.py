"""Ingest on real-image folders: hostile inputs, dedupe, resume, metrics."""
from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

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


@pytest.fixture
def hostile_folder(tmp_path):
    root = tmp_path / "illustrations"
    (root / "nested").mkdir(parents=True)
    good = colourful(1)
    (root / "good.png").write_bytes(png_bytes(good))
    (root / "nested" / "good2.jpg").write_bytes(cv2.imencode(".jpg", colourful(2)[..., ::-1])[1].tobytes())
    (root / "zz_duplicate.png").write_bytes(png_bytes(good))
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
    (root / "notes.txt").write_text("ignored, not an image")
    with zipfile.ZipFile(root / "pack.zip", "w") as zf:
        zf.writestr("inner/zipped.png", png_bytes(colourful(13)))
        zf.writestr("inner/readme.md", "ignored")
    (root / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    return root


EXPECTED_KEPT = {"good.png", "good2.jpg", "cmyk.jpg", "deep16.png", "alpha.png", "palette.png",
                 "pack.zip::inner/zipped.png"}
EXPECTED_REJECTED = {
    "zz_duplicate.png": "duplicate",
    "truncated.jpg": "cannot decode",
    "zero.png": "empty file",
    "text.png": "cannot decode",
    "tiny.png": "too small",
    "animated.gif": "animated",
    "grey_photo.jpg": "greyscale",
    "absurd.png": "declared size",
    "broken.zip": "unreadable archive",
}


def _name(source: str) -> str:
    return source.split("::")[0].rsplit("/", 1)[-1] + ("::" + source.split("::")[1] if "::" in source else "")


def run_ingest(cfg):
    from flows.ingest import ingest

    return ingest(cfg)


def test_hostile_folder_all_recorded_none_fatal(tmp_path, hostile_folder):
    cfg = tiny_config(tmp_path, ingest={"source": "folder", "folder": str(hostile_folder)},
                      data={"shard_rows": 5})
    metrics = run_ingest(cfg)
    rows = list(iter_rows([cfg.data_root / "shards" / "color"]))
    kept = {_name(r["source"]) for r in rows}
    assert kept == EXPECTED_KEPT
    rejects = pq.read_table(cfg.data_root / "rejects.parquet").to_pylist()
    by_name = {_name(r["path"]): r["reason"] for r in rejects}
    assert set(by_name) == set(EXPECTED_REJECTED)
    for name, reason in EXPECTED_REJECTED.items():
        assert reason in by_name[name], (name, by_name[name])
    assert metrics["images"] == len(EXPECTED_KEPT)
    assert metrics["rejected"] == len(EXPECTED_REJECTED)
    assert metrics["ignored_files"] == 1  # notes.txt (zip members are filtered by suffix)
    for row in rows:
        assert (row["width"], row["height"]) == (32, 32)
    on_disk = json.loads((cfg.data_root / "metrics" / "ingest.json").read_text())
    assert on_disk["images"] == len(EXPECTED_KEPT)


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


def test_resume_after_crash_keeps_done_shards(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, ingest={"source": "folder", "folder": str(tmp_path / "in")},
                      data={"shard_rows": 3})
    (tmp_path / "in").mkdir()
    for i in range(10):
        (tmp_path / "in" / f"img{i:02d}.png").write_bytes(png_bytes(colourful(100 + i)))
    reference = run_ingest(cfg)
    shard_dir = cfg.data_root / "shards" / "color"
    first = {p.name: p.read_bytes() for p in shard_paths(shard_dir)}
    assert len(first) == 4

    # Crash while writing the third shard: earlier shards stay, no partial file.
    for p in shard_paths(shard_dir)[2:]:
        p.unlink()
    real_write = ing.write_color_shard
    calls = []

    def crash_on_third(shard_dir_, index, *args):
        calls.append(index)
        if index == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_write(shard_dir_, index, *args)

    monkeypatch.setattr(ing, "write_color_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(cfg)
    assert calls == [2, 3]
    assert [p.name for p in shard_paths(shard_dir)] == list(first)[:3]
    assert not list(shard_dir.glob(".*tmp*"))

    monkeypatch.setattr(ing, "write_color_shard", real_write)
    before = {p.name: p.stat().st_mtime_ns for p in shard_paths(shard_dir)}
    resumed = run_ingest(cfg)
    after = {p.name: p.read_bytes() for p in shard_paths(shard_dir)}
    assert after == first  # byte-identical to the uninterrupted run
    assert all(p.stat().st_mtime_ns == before[p.name] for p in shard_paths(shard_dir)[:3])
    assert resumed["images"] == reference["images"] == 10
    assert resumed["inputs_processed_this_run"] == 1


def test_changed_params_invalidate_shards(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(4):
        (tmp_path / "in" / f"img{i}.png").write_bytes(png_bytes(colourful(200 + i)))
    cfg = tiny_config(tmp_path, ingest={"source": "folder", "folder": str(tmp_path / "in")},
                      data={"shard_rows": 2})
    run_ingest(cfg)
    bigger = tiny_config(tmp_path, ingest={"source": "folder", "folder": str(tmp_path / "in")},
                         data={"shard_rows": 2, "resolution": 48})
    metrics = run_ingest(bigger)
    assert metrics["inputs_processed_this_run"] == 4
    assert {r["width"] for r in iter_rows([bigger.data_root / "shards" / "color"])} == {48}
