"""Watch reference-following learn: the toon benchmark on a few pairs, during training.

Every `train.monitor_every` steps the generator paints the first
`train.monitor_pairs` pairs of the evaluate stage's toon benchmark (never seen
in training) with both of their references, and the per-part swap projection
and ΔE00 go to dvclive (`monitor/...` curves in `dvc plots show`). The pairs,
their sketches (the training extractor) and their references' codes (the
training style code and precision) are made once, before the first step; the
style encoder is then dropped, so the monitor costs one small painting batch.
"""
from __future__ import annotations

import logging
import time

import torch

from pipeline.config import Config
from pipeline.evaluate import benchmark as bench
from pipeline.toon import PARTS

log = logging.getLogger("s2p.train")


class Monitor:
    def __init__(self, cfg: Config, G: torch.nn.Module, device: torch.device):
        from pipeline.colorize import Colorizer
        from pipeline.featurize import encoder_for
        from pipeline.sketch import make_extractor

        self.cfg, self.G = cfg, G
        n, res = cfg.train.monitor_pairs, cfg.data.resolution
        self.batch = min(n, cfg.evaluate.batch_size)
        self.pairs = bench.make_pairs(n, cfg.evaluate.seed, res, make_extractor(cfg.extract, log),
                                      self.batch, progress=False)
        encoder = None if cfg.featurize.code == "oracle_palette" else encoder_for(cfg.featurize)
        meta = {"model": cfg.model.model_dump(), "resolution": res}
        self.colorizer = Colorizer(G, meta, encoder, device, featurize=cfg.featurize)
        self.codes = [bench.reference_codes(self.colorizer, self.pairs, w, self.batch)
                      for w in (0, 1)]
        self.colorizer.encoder = None  # codes are fixed: free VGG19's memory
        self.seconds = 0.0  # spent scoring: the loop leaves it out of images/s

    @torch.no_grad()
    def score(self) -> dict[str, float]:
        """{"swap/all": …, "delta_e/all": …, "hit_rate": …, "swap/<part>": …,
        "delta_e/<part>": …} (dvclive nests names at "/", so "all" is a leaf too)."""
        started = time.perf_counter()
        was_training = self.G.training
        self.G.eval()
        try:
            outputs = bench.paint_pairs(self.colorizer, self.pairs, self.batch, self.codes,
                                        progress=False)
        finally:
            self.G.train(was_training)
            self.seconds += time.perf_counter() - started
        result = bench.score(self.pairs, *outputs, self.cfg.evaluate.hit_threshold)
        model = result["benchmark"]["model"]
        scores = {"swap/all": result["swap"]["projection"], "delta_e/all": model["delta_e"],
                  "hit_rate": model["hit_rate"]}
        for part, value in result["swap"]["per_part"].items():
            scores[f"swap/{PARTS[part]}"] = value["projection"]
        for part, methods in result["per_part"].items():
            scores[f"delta_e/{PARTS[part]}"] = methods["model"]["delta_e"]
        return {k: float(v) for k, v in scores.items() if v is not None}
