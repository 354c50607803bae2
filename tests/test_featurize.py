"""featurize: style shards aligned with tiny colour shards, resumable, deterministic."""
from __future__ import annotations

import json

# The ephemeral Prefect server can take more than its default 20 s to start on a
# loaded 2-core machine (set before prefect is imported: it reads settings once).

import cv2  # noqa: E402
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from flows.featurize import featurize
from pipeline.featurize import encoder_for, row_rng
from pipeline.augment import distort_for_reference
from pipeline.shards import COLOR_SCHEMA, read_manifest, shard_name, shard_paths, write_shard
from pipeline.shards import style_arrays
from tests.conftest import tiny_config

SIZE = 32


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def _image(i: int) -> np.ndarray:
    """Two flat colour blocks, distinct per i (enough for VGG to tell them apart)."""
    rng = np.random.default_rng(i)
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    img[SIZE // 2:, : SIZE // 2] = rng.integers(0, 256, 3)
    return img


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()


def write_colour_set(root, counts, start=0, corrupt=()):
    """Colour shards with counts[i] rows each; rows numbered from `start`."""
    out = root / "shards" / "color"
    n = start
    for s, count in enumerate(counts):
        rows = []
        for _ in range(count):
            rows.append({"id": f"{n:016x}", "split": "train",
                         "color": b"garbage" if n in corrupt else _png(_image(n)),
                         "width": SIZE, "height": SIZE, "source": f"toon:{n}",
                         "sha256": "0" * 64, "mask": None, "palette": None})
            n += 1
        write_shard(out / shard_name(s), pa.Table.from_pylist(rows, schema=COLOR_SCHEMA),
                    "color", 4, fingerprint=f"colour-{s}")
    return out


def _codes_by_id(root):
    result = {}
    for path in shard_paths(root / "shards" / "style"):
        table = pq.read_table(path)
        style, aug, valid = style_arrays(table)
        for i, row_id in enumerate(table.column("id").to_pylist()):
            result[row_id] = (style[i], aug[i], valid[i])
    return result


def test_round_trip_resume_and_determinism(tmp_path):
    cfg = tiny_config(tmp_path, featurize={"augmented_copies": 2, "batch_size": 3})
    root = cfg.data_root
    colour_dir = write_colour_set(root, [3, 2])
    metrics = featurize(cfg)

    style_dir = root / "shards" / "style"
    assert [p.name for p in shard_paths(style_dir)] == [p.name for p in shard_paths(colour_dir)]
    for c_path, s_path in zip(shard_paths(colour_dir), shard_paths(style_dir)):
        ids = pq.read_table(c_path, columns=["id"]).column("id")
        table = pq.read_table(s_path)
        assert table.column("id").equals(ids)
        assert table.schema.field("style").type == pa.list_(pa.float16(), 4096)
        style, aug, valid = style_arrays(table)
        assert valid.all() and aug.shape == (len(ids), 2, 4096)

    # Codes equal a direct encoder run; augmented codes are of distorted copies.
    enc = encoder_for(cfg.featurize)  # the flow's own (cached) encoder
    assert enc.source == "random"
    codes = _codes_by_id(root)
    row_id = f"{4:016x}"
    direct = enc.encode(_image(4)[None]).numpy()[0]
    np.testing.assert_allclose(codes[row_id][0].astype(np.float32), direct, rtol=2e-3, atol=1e-4)
    rng = row_rng(cfg.featurize.seed, row_id)
    copies = np.stack([distort_for_reference(_image(4), rng) for _ in range(2)])
    np.testing.assert_allclose(codes[row_id][1].astype(np.float32), enc.encode(copies).numpy(),
                               rtol=2e-3, atol=1e-4)
    assert not np.array_equal(codes[row_id][1][0], codes[row_id][0])

    assert metrics["style_encoder"] == "random" and metrics["images"] == 5
    assert metrics["images_computed"] == 5 and metrics["images_per_s"] > 0
    saved = json.loads((root / "metrics" / "featurize.json").read_text())
    for key in ("style_encoder", "input_size", "augmented_copies", "images", "images_per_s",
                "seconds"):
        assert key in saved
    assert saved["input_size"] == SIZE and saved["augmented_copies"] == 2
    assert read_manifest(style_dir)["rows"] == 5

    # Resume: only the deleted shard is recomputed, to the same bytes of codes.
    first, second = shard_paths(style_dir)
    before = pq.read_table(second)
    stamp = first.stat().st_mtime_ns
    second.unlink()
    again = featurize(cfg)
    assert again["shards_computed"] == 1 and again["images_computed"] == 2
    assert first.stat().st_mtime_ns == stamp
    assert pq.read_table(second).equals(before)

    # Changing a setting makes every shard stale.
    other = featurize(tiny_config(tmp_path, featurize={"augmented_copies": 1, "batch_size": 3}))
    assert other["shards_computed"] == 2
    assert style_arrays(pq.read_table(second))[1].shape[1] == 1


def test_codes_do_not_depend_on_sharding_or_batching(tmp_path):
    a = tiny_config(tmp_path / "a", featurize={"augmented_copies": 1, "batch_size": 1})
    b = tiny_config(tmp_path / "b", featurize={"augmented_copies": 1, "batch_size": 4})
    write_colour_set(a.data_root, [2, 2])
    write_colour_set(b.data_root, [4])
    featurize(a)
    featurize(b)
    codes_a, codes_b = _codes_by_id(a.data_root), _codes_by_id(b.data_root)
    assert codes_a.keys() == codes_b.keys()
    for row_id in codes_a:
        for x, y in zip(codes_a[row_id][:2], codes_b[row_id][:2]):
            np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32),
                                       rtol=2e-3, atol=1e-3)


def test_bad_row_is_null_and_counted_and_k0_gives_empty_lists(tmp_path):
    cfg = tiny_config(tmp_path, featurize={"augmented_copies": 0},
                      train={"augmented_self_reference": False})
    write_colour_set(cfg.data_root, [3], corrupt={1})
    metrics = featurize(cfg)
    table = pq.read_table(shard_paths(cfg.data_root / "shards" / "style")[0])
    assert table.column("style").null_count == 1 and metrics["bad_rows"] == 1
    assert table.column("style_aug").to_pylist()[0] == []
    style, aug, valid = style_arrays(table)
    assert valid.tolist() == [True, False, True] and aug.shape == (3, 0, 4096)


def test_missing_colour_set_is_one_line_error(tmp_path):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="no colour shards; run the ingest stage first"):
        featurize(tiny_config(tmp_path))


def test_distortion_is_geometric_only_and_seeded():
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :40, 0] = 255   # red left, blue right
    img[:, 40:, 2] = 255
    a = distort_for_reference(img, np.random.default_rng(5))
    b = distort_for_reference(img, np.random.default_rng(5))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, img)
    assert not np.array_equal(a, distort_for_reference(img, np.random.default_rng(6)))
    # Only interpolations of the two colours: no green, R + B stays 255.
    assert a[..., 1].max() == 0
    assert np.abs(a[..., 0].astype(int) + a[..., 2] - 255).max() <= 1


def test_pooled_code_is_narrower_and_shift_tolerant(tmp_path):
    """pooled: per-channel mean/std of five VGG19 layers (2944-d), the same for an
    image and a circularly shifted copy of it far more than fc1 is."""
    cfg = tiny_config(tmp_path, featurize={"code": "pooled"})
    assert cfg.model.style_dim == 2944
    write_colour_set(cfg.data_root, [3])
    featurize(cfg)
    table = pq.read_table(shard_paths(cfg.data_root / "shards" / "style")[0])
    assert table.schema.field("style").type == pa.list_(pa.float16(), 2944)
    img = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    img = cv2.resize(cv2.resize(img, (4, 4)), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
    moved = np.roll(img, SIZE // 4, axis=1)

    def change(code):
        enc = encoder_for(cfg.featurize.model_copy(update={"code": code}))
        a, b = enc.encode(np.stack([img, moved])).numpy()
        return np.linalg.norm(a - b) / np.linalg.norm(a)

    assert change("pooled") < 0.5 * change("fc1")


def test_oracle_palette_codes_are_the_toon_palettes(tmp_path):
    from pipeline import toon
    from pipeline.oracle import ORACLE_DIM, palette_code

    cfg = tiny_config(tmp_path, featurize={"code": "oracle_palette", "augmented_copies": 2})
    assert cfg.model.style_dim == ORACLE_DIM == 24
    out = cfg.data_root / "shards" / "color"
    characters = [toon.generate(s, SIZE) for s in range(3)]
    rows = [{"id": f"{i:016x}", "split": "train", "color": _png(c.image), "width": SIZE,
             "height": SIZE, "source": f"toon:{i}", "sha256": "0" * 64, "mask": None,
             "palette": c.palette.to_json()} for i, c in enumerate(characters)]
    write_shard(out / shard_name(0), pa.Table.from_pylist(rows, schema=COLOR_SCHEMA), "color", 4,
                fingerprint="c")
    metrics = featurize(cfg)
    assert metrics["style_encoder"] == "oracle" and metrics["code"] == "oracle_palette"
    style, aug, valid = style_arrays(pq.read_table(shard_paths(cfg.data_root / "shards" / "style")[0]))
    for i, c in enumerate(characters):
        np.testing.assert_allclose(style[i].astype(np.float32), palette_code(c.palette), atol=2e-3)
        assert np.array_equal(aug[i][0], style[i]) and np.array_equal(aug[i][1], style[i])


def test_oracle_palette_refuses_rows_without_a_palette(tmp_path):
    cfg = tiny_config(tmp_path, featurize={"code": "oracle_palette"})
    write_colour_set(cfg.data_root, [2])  # palette column is null
    with pytest.raises(Exception, match="oracle_palette works on toon data only"):
        featurize(cfg)
