"""The labelled real-picture benchmark (issue 17) and the faces profile's plumbing."""
from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pytest

from conftest import REPO, tiny_config

HAIR = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}
EYES = {"dark": (30, 30, 30), "light": (230, 230, 230)}
SIZE = 32


def picture(hair: str, eyes: str, seed: int) -> np.ndarray:
    """A 'face': hair colour on top, an eye band, skin below, a little noise."""
    rng = np.random.default_rng(seed)
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[:] = (250, 220, 200)
    img[: int(0.35 * SIZE)] = HAIR[hair]
    img[int(0.4 * SIZE):int(0.6 * SIZE), 4:-4] = EYES[eyes]
    return np.clip(img + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


class PaintsTheCode:
    """A stand-in generator whose painting is the picture its code names: by
    construction it follows the reference exactly."""

    code = "bands"

    def __init__(self, library: dict[int, np.ndarray]):
        self.library = library

    def paint(self, sketches, codes):
        return np.stack([self.library[int(c[0])] for c in codes])


def write_labelled_set(root, n: int = 90):
    """Colour/sketch/style shards whose rows come from labelled picture files; the
    style code of row i is [i, 0, …] (PaintsTheCode reads it back)."""
    from pipeline.images import encode_image
    from pipeline.shards import (COLOR_SCHEMA, SKETCH_SCHEMA, content_id, pixel_sha256,
                                 shard_name, style_table, write_manifest, write_shard)

    pics = root / "pictures"
    pics.mkdir(parents=True)
    colour, sketch, ids, library, labels = [], [], [], {}, []
    for i in range(n):
        hair, eyes = list(HAIR)[i % 3], list(EYES)[(i // 3) % 2]
        img = picture(hair, eyes, i)
        path = pics / f"{i}.png"
        path.write_bytes(encode_image(img))
        labels.append({"file": f"pictures/{i}.png", "hair": hair, "eyes": eyes})
        row_id = content_id(pixel_sha256(img))
        ids.append(row_id)
        library[i] = img
        colour.append({"id": row_id, "split": "test" if i % 4 == 0 else "train",
                       "color": encode_image(img), "width": SIZE, "height": SIZE,
                       "source": str(path), "sha256": pixel_sha256(img), "mask": None,
                       "palette": None})
        sketch.append({"id": row_id, "sketch": encode_image(np.full((SIZE, SIZE), 255, np.uint8))})
    shards = root / "data" / "shards"
    codes = np.zeros((n, 8), np.float32)
    codes[:, 0] = np.arange(n)
    write_shard(shards / "color" / shard_name(0), pa.Table.from_pylist(colour, schema=COLOR_SCHEMA),
                "color", 16)
    write_shard(shards / "sketch" / shard_name(0), pa.Table.from_pylist(sketch, schema=SKETCH_SCHEMA),
                "sketch", 16)
    write_shard(shards / "style" / shard_name(0), style_table(ids, codes, np.zeros((n, 0, 8))),
                "style", 16)
    for kind in ("color", "sketch", "style"):
        write_manifest(shards / kind, kind)
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "hair", "eyes"])
        writer.writeheader()
        writer.writerows(labels)
    return library


def test_a_generator_that_follows_by_construction_scores_follow_rate_one(tmp_path):
    from pipeline.evaluate.labelled import evaluate_labelled
    from pipeline.layout import Layout

    library = write_labelled_set(tmp_path)
    metrics, many, pairs = evaluate_labelled(PaintsTheCode(library), Layout(tmp_path / "data"),
                                             str(tmp_path / "labels.csv"), 40, 0, 8)
    assert metrics["judge_accuracy"] == {"hair": 1.0, "eyes": 1.0}
    hair = metrics["hair"]
    assert hair["pairs"] == 40 and hair["classes"] == 3
    assert hair["model"] == {"follow_rate": 1.0, "own_rate": 0.0,
                             "agree_reference": 1.0, "agree_sketch": 0.0}
    assert hair["judged_alike"] == 0.0  # a right judge tells A and B apart
    # A's own colours are the judge's accuracy on A: own 1, follow 0 (labels differ).
    assert hair["own_colours"] == {"follow_rate": 0.0, "own_rate": 1.0,
                                   "agree_reference": 0.0, "agree_sketch": 1.0}
    assert metrics["eyes"]["model"]["follow_rate"] == 1.0
    assert metrics["unlabelled_rows"] == 0 and metrics["held_out_pictures"] >= 12
    assert len(many) == 4 and len(many[0]) == 1 + 2 * 3  # sketch + 3 hair colours
    assert len(pairs) == 8 and all(len(r) == 4 for r in pairs)


def test_a_generator_that_ignores_the_reference_scores_its_own_label(tmp_path):
    from pipeline.evaluate.labelled import draw_pairs, labelled_pictures, read_labels, score
    from pipeline.evaluate.labelled import Judge
    from pipeline.layout import Layout

    write_labelled_set(tmp_path)
    train, pictures, _ = labelled_pictures(Layout(tmp_path / "data"),
                                           read_labels(tmp_path / "labels.csv"))
    judges = {k: Judge(np.stack(x), y) for k, (x, y) in train.items()}
    pairs = draw_pairs(pictures, 30, 1)
    assert all(pictures[a].labels["hair"] != pictures[b].labels["hair"] for a, b in pairs)
    copies = [pictures[a].colour for a, _ in pairs]  # paints A's own colours
    result = score(judges, pictures, pairs, copies)
    assert result["hair"]["model"] == {"follow_rate": 0.0, "own_rate": 1.0,
                                       "agree_reference": 0.0, "agree_sketch": 1.0}


def test_bad_labels_file_is_one_line(tmp_path):
    from pipeline.config import ConfigError
    from pipeline.evaluate.labelled import read_labels

    with pytest.raises(ConfigError, match="no such file|No such file"):
        read_labels(tmp_path / "absent.csv")
    (tmp_path / "l.csv").write_text("file,hair\nx.png,red\n")
    with pytest.raises(ConfigError, match=r"missing column\(s\) \['eyes'\]"):
        read_labels(tmp_path / "l.csv")


def test_stage_skips_the_labelled_benchmark_without_labels(tmp_path):
    from flows.evaluate import labelled_task

    cfg = tiny_config(tmp_path)
    assert cfg.evaluate.labels is None
    out = tmp_path / "evaluate"
    out.mkdir()

    class AnyModel:
        code = "bands"

    assert labelled_task.fn(cfg, AnyModel(), out) == "skipped (evaluate.labels is null)"
    assert (out / "labelled_grid.png").is_file() and (out / "labelled_pairs.png").is_file()


@pytest.mark.parametrize("name", ["faces", "paper", "large"])
def test_every_profile_validates(name):
    from pipeline.params_file import profile_set_args

    assert profile_set_args(REPO / "profiles" / f"{name}.yaml", REPO / "params.yaml")


def test_faces_profile_validates_and_becomes_dvc_exp_arguments():
    from pipeline.params_file import profile_set_args

    args = profile_set_args(REPO / "profiles" / "faces.yaml", REPO / "params.yaml")
    pairs = dict(a.split("=", 1) for a in args[1::2])
    assert args[::2] == ["-S"] * len(pairs)
    assert pairs["ingest.source"] == "folder" and pairs["data.split_by"] == "perceptual"
    assert pairs["evaluate.labels"].endswith("faces/labels.csv")


def test_a_bad_profile_is_refused_naming_the_key(tmp_path):
    from pipeline.config import ConfigError
    from pipeline.params_file import profile_set_args

    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {resolution: 100}\n")
    with pytest.raises(ConfigError, match="resolution=100 must be a multiple"):
        profile_set_args(bad, REPO / "params.yaml")


def test_perceptual_split_keeps_near_duplicates_together():
    import cv2

    from pipeline.shards import perceptual_key

    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (96, 96),
                      interpolation=cv2.INTER_CUBIC)
    smaller = cv2.resize(cv2.resize(base, (70, 70), interpolation=cv2.INTER_AREA), (96, 96))
    jpeg = cv2.imdecode(cv2.imencode(".jpg", base, [cv2.IMWRITE_JPEG_QUALITY, 90])[1],
                        cv2.IMREAD_COLOR)
    other = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (96, 96),
                       interpolation=cv2.INTER_CUBIC)
    key = perceptual_key(base)
    assert perceptual_key(smaller) == key and perceptual_key(jpeg) == key
    assert perceptual_key(other) != key and len(key) == 4
