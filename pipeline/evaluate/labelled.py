"""Reference-following on real pictures, scored by a judge that never saw the generator.

When `evaluate.labels` names a CSV (`file`, `hair`, `eyes`; `file` relative to
the CSV, e.g. `../shared/samples/faces/labels.csv`), the evaluate stage:

1. maps each ingested row to its labels through the row's `source` path;
2. trains a *judge* for each label kind on the train split's colour pictures: a
   softmax regression over a colour histogram of the part of the picture where
   that label lives (hair: the top 60% of a face crop; eyes: the band from 35%
   to 65% of its height). It is fitted to the tags alone, so it is independent
   of the generator; its accuracy on the held-out pictures is the ceiling of
   every rate below;
3. draws `evaluate.labelled_pairs` pairs (A, B) of held-out (test split) pictures
   whose hair labels differ, paints A's sketch with B's style code, and judges
   the painting: **follow rate** = share judged as B's label, **own rate** =
   share judged as A's. The same for the baselines: the sketch alone, B's mean
   colour under A's lines, and A's own colours (own rate = the judge's accuracy
   on A). Eye rates use the pairs whose eye labels differ too. Tag-free:
   **agree_reference** / **agree_sketch** = share judged as the judge judges
   B's / A's own picture (its word on the painting against its word on the
   pictures, so a wrong tag does not count against the painting).

Tags are noisy (SOURCES.md of the faces says so): the judge learns whatever the
tags mean, so the rates stay meaningful, but a class name is the tag's, not a
promise about the picture.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import ConfigError
from pipeline.evaluate.baselines import mean_colour_baseline, sketch_baseline
from pipeline.images import decode_stored
from pipeline.shards import iter_rows

log = logging.getLogger(__name__)

KINDS = ("hair", "eyes")
REGIONS = {"hair": (0.0, 0.6), "eyes": (0.35, 0.65)}  # rows, as fractions of the height
HUES, SATS, VALS, GREYS = 12, 3, 3, 4
PENALTY = 1e-3


def read_labels(csv_path: str | Path) -> dict[str, dict[str, str]]:
    """{resolved picture path: {"hair": …, "eyes": …}} from the labels CSV."""
    path = Path(csv_path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"file", *KINDS} - set(reader.fieldnames or ())
            if missing:
                raise ConfigError(f"evaluate.labels: {path}: missing column(s) {sorted(missing)}")
            rows = list(reader)
    except OSError as err:
        raise ConfigError(f"evaluate.labels: {path}: {err.strerror or err}") from None
    return {str((path.parent / r["file"]).resolve()): {k: r[k] for k in KINDS} for r in rows}


@dataclass
class Picture:
    id: str
    colour: np.ndarray   # HxWx3 uint8
    sketch: np.ndarray   # HxW uint8
    style: np.ndarray    # [D] float32, the stored code
    labels: dict[str, str]


def labelled_pictures(layout, labels: dict[str, dict[str, str]]):
    """(train-split features per kind with their labels, held-out pictures, rows
    without a label). Train pictures are reduced to judge features on the fly."""
    train = {k: ([], []) for k in KINDS}
    held_out, unlabelled = [], 0
    rows = iter_rows([layout.shards(s) for s in ("color", "sketch", "style")],
                     [["split", "color", "source"], ["sketch"], ["style"]])
    for row in rows:
        tags = labels.get(str(Path(row["source"]).resolve()))
        if tags is None or row["style"] is None:
            unlabelled += 1
            continue
        colour = decode_stored(row["color"], 3)
        if row["split"] == "train":
            for kind in KINDS:
                train[kind][0].append(features(colour, kind))
                train[kind][1].append(tags[kind])
        elif row["split"] == "test":
            held_out.append(Picture(row["id"], colour, decode_stored(row["sketch"], 1),
                                    np.asarray(row["style"], np.float32), tags))
    return train, held_out, unlabelled


def features(rgb: np.ndarray, kind: str) -> np.ndarray:
    """Square-rooted colour histogram (hue × saturation × value, plus grey levels) of
    the label's region: a few hundred numbers that tell colours apart, not shapes."""
    top, bottom = REGIONS[kind]
    h = rgb.shape[0]
    region = np.ascontiguousarray(rgb[int(top * h):max(int(bottom * h), int(top * h) + 1)])
    hsv = cv2.cvtColor(region, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.int32)
    hue, sat, val = hsv[:, 0] * HUES // 256, hsv[:, 1] * SATS // 256, hsv[:, 2] * VALS // 256
    grey = hsv[:, 1] < 40
    bins = np.where(grey, HUES * SATS * VALS + hsv[:, 2] * GREYS // 256,
                    (hue * SATS + sat) * VALS + val)
    hist = np.bincount(bins, minlength=HUES * SATS * VALS + GREYS).astype(np.float64)
    return np.sqrt(hist / max(hist.sum(), 1.0))


class Judge:
    """Softmax regression from `features` to a label kind's classes (L-BFGS, L2)."""

    def __init__(self, x: np.ndarray, labels: list[str]):
        from scipy.optimize import minimize

        self.classes = sorted(set(labels))
        y = np.array([self.classes.index(c) for c in labels])
        self.mean, self.scale = x.mean(0), x.std(0) + 1e-6
        xs = self._standard(x)
        n, d, k = len(y), xs.shape[1], len(self.classes)
        onehot = np.eye(k)[y]

        def loss(w):
            w = w.reshape(d + 1, k)
            logits = xs @ w[:-1] + w[-1]
            logits -= logits.max(1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(1, keepdims=True)
            value = -np.log(p[np.arange(n), y] + 1e-12).mean() + PENALTY * (w[:-1] ** 2).sum()
            grad = np.vstack([xs.T @ (p - onehot) / n + 2 * PENALTY * w[:-1],
                              (p - onehot).mean(0)])
            return value, grad.ravel()

        fitted = minimize(loss, np.zeros((d + 1) * k), jac=True, method="L-BFGS-B",
                          options={"maxiter": 500})
        self.weights = fitted.x.reshape(d + 1, k)

    def _standard(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale

    def predict(self, x: np.ndarray) -> list[str]:
        logits = self._standard(x) @ self.weights[:-1] + self.weights[-1]
        return [self.classes[i] for i in logits.argmax(1)]


def draw_pairs(pictures: list[Picture], count: int, seed: int) -> list[tuple[int, int]]:
    """`count` (A, B) index pairs whose hair labels differ (fewer when impossible)."""
    rng = np.random.default_rng(seed)
    hair = np.array([p.labels["hair"] for p in pictures])
    if len(set(hair)) < 2:
        return []
    pairs = []
    for a in rng.permutation(np.resize(np.arange(len(pictures)), count)):
        others = np.flatnonzero(hair != hair[a])
        pairs.append((int(a), int(others[rng.integers(len(others))])))
    return pairs


def paint(colorizer, pictures: list[Picture], pairs: list[tuple[int, int]],
          batch: int) -> list[np.ndarray]:
    outputs = []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        sketches = np.stack([pictures[a].sketch for a, _ in chunk])
        codes = np.stack([pictures[b].style for _, b in chunk])
        outputs.extend(colorizer.paint(sketches, codes))
    return outputs


def judged(judge: Judge, kind: str, images: list[np.ndarray]) -> list[str]:
    return judge.predict(np.stack([features(img, kind) for img in images]))


def rates(said: list[str], targets: list[str], owners: list[str],
          judged_targets: list[str], judged_owners: list[str]) -> dict[str, float]:
    """follow/own rate: the painting judged as B's / A's tag. agree_reference /
    agree_sketch: judged as the judge judges B's / A's own picture (no tag noise:
    the judge's word on the reference against its word on the painting)."""
    def share(a, b):
        return float(np.mean([x == y for x, y in zip(a, b)]))
    return {"follow_rate": share(said, targets), "own_rate": share(said, owners),
            "agree_reference": share(said, judged_targets),
            "agree_sketch": share(said, judged_owners)}


def score(judges: dict[str, Judge], pictures: list[Picture], pairs, outputs) -> dict:
    """Follow and own rates of the model and the baselines, per label kind."""
    methods = {
        "model": outputs,
        "sketch": [sketch_baseline(pictures[a].sketch) for a, _ in pairs],
        "mean_colour": [mean_colour_baseline(pictures[a].sketch, pictures[b].colour)
                        for a, b in pairs],
        "own_colours": [pictures[a].colour for a, _ in pairs],
    }
    result = {}
    for kind, judge in judges.items():
        keep = [i for i, (a, b) in enumerate(pairs)
                if pictures[a].labels[kind] != pictures[b].labels[kind]]
        if not keep:
            continue
        targets = [pictures[pairs[i][1]].labels[kind] for i in keep]
        owners = [pictures[pairs[i][0]].labels[kind] for i in keep]
        judged_b = judged(judge, kind, [pictures[pairs[i][1]].colour for i in keep])
        judged_a = judged(judge, kind, [pictures[pairs[i][0]].colour for i in keep])
        result[kind] = {"pairs": len(keep), "classes": len(judge.classes),
                        "chance": 1.0 / len(judge.classes),
                        "judged_alike": float(np.mean([a == b for a, b in zip(judged_a, judged_b)])),
                        **{m: rates(judged(judge, kind, [imgs[i] for i in keep]), targets,
                                    owners, judged_b, judged_a)
                           for m, imgs in methods.items()}}
    return result


def one_sketch_many_references(colorizer, pictures: list[Picture], rows: int,
                               colours: int) -> list[list[np.ndarray]]:
    """Grid rows: a held-out sketch, then (reference, painting) for references of
    `colours` different hair labels (the most frequent ones)."""
    by_label: dict[str, list[int]] = {}
    for i, p in enumerate(pictures):
        by_label.setdefault(p.labels["hair"], []).append(i)
    common = sorted(by_label, key=lambda c: (-len(by_label[c]), c))[:colours]
    grid = []
    for r in range(min(rows, len(pictures))):
        refs = [by_label[c][r % len(by_label[c])] for c in common]
        painted = colorizer.paint(np.stack([pictures[r].sketch] * len(refs)),
                                  np.stack([pictures[i].style for i in refs]))
        row = [pictures[r].sketch]
        for i, out in zip(refs, painted):
            row += [pictures[i].colour, out]
        grid.append(row)
    return grid


def evaluate_labelled(colorizer, layout, labels_csv: str, count: int, seed: int,
                      batch: int) -> tuple[dict, list, list]:
    """(metrics, "one sketch, several hair colours" grid rows, pair grid rows)."""
    labels = read_labels(labels_csv)
    train, pictures, unlabelled = labelled_pictures(layout, labels)
    if len(pictures) < 2 or not train["hair"][0]:
        raise ConfigError(f"evaluate.labels: {labels_csv}: too few labelled pictures in the "
                          f"shards ({len(train['hair'][0])} train, {len(pictures)} test)")
    judges = {k: Judge(np.stack(x), y) for k, (x, y) in train.items()}
    held = {k: float(np.mean([s == p.labels[k] for s, p in zip(
        judges[k].predict(np.stack([features(p.colour, k) for p in pictures])), pictures)]))
        for k in KINDS}
    pairs = draw_pairs(pictures, count, seed)
    if not pairs:
        raise ConfigError(f"evaluate.labels: {labels_csv}: every held-out picture has the "
                          "same hair label: no pair to test")
    outputs = paint(colorizer, pictures, pairs, batch)
    metrics = {"labels": str(labels_csv), "train_pictures": len(train["hair"][0]),
               "held_out_pictures": len(pictures), "unlabelled_rows": unlabelled,
               "judge_accuracy": held, **score(judges, pictures, pairs, outputs)}
    hair = metrics["hair"]["model"]
    log.info("labelled: %d pairs; hair follow %.2f / own %.2f (judge accuracy %.2f); "
             "judged like the reference %.2f / like the sketch's picture %.2f",
             len(pairs), hair["follow_rate"], hair["own_rate"], held["hair"],
             hair["agree_reference"], hair["agree_sketch"])
    pair_rows = [[pictures[a].sketch, pictures[b].colour, out, pictures[a].colour]
                 for (a, b), out in zip(pairs[:8], outputs)]
    return metrics, one_sketch_many_references(colorizer, pictures, 4, 5), pair_rows
