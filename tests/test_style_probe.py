"""benchmarks/style_probe.py: the read-out's swap projection, on codes whose
answer is known (a code that is the colours themselves follows every change
of reference; a code that carries no colour follows none)."""
from __future__ import annotations

import importlib.util

import numpy as np

from conftest import REPO

spec = importlib.util.spec_from_file_location("style_probe", REPO / "benchmarks" / "style_probe.py")
style_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(style_probe)
PARTS = len(style_probe.PARTS)


def colours(rng, n):
    return np.concatenate([rng.uniform([20, -60, -60], [90, 60, 60], (n, 3))
                           for _ in range(PARTS)], axis=1)


def test_a_code_that_is_the_colours_follows_every_swap_and_noise_follows_none():
    rng = np.random.default_rng(0)
    y = colours(rng, 400)
    truth = (colours(rng, 32), colours(rng, 32))
    present = np.ones((32, PARTS), bool)
    present[:, -1] = False  # a part A lacks is never scored
    exact = style_probe.probe_swap(y, y, y, truth, truth, present, min_shift=10.0)
    assert abs(exact["all"] - 1) < 0.05  # ridge shrinks a little and np.isnan(exact["accessory"])
    noise = lambda n: rng.normal(size=(n, 64))  # noqa: E731
    blind = style_probe.probe_swap(noise(400), noise(400), y, (noise(32), noise(32)), truth,
                                   present, min_shift=10.0)
    assert abs(blind["all"]) < 0.15
