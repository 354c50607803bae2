"""The Style2paints V1 GAN training loop.

One step: G paints the batch from (sketch, reference code); D learns to map the
real colour image to norm(V(y)) of the target's own style code and the painting
to zeros; then G learns from the guided L1 plus the adversarial term (see
`pipeline/losses.py`). D's step uses G's output detached; G's step runs the
plain (non-DDP) D with its parameters frozen, so only G's gradients are
synchronised in that backward.

Speed knobs: bf16 autocast (`train.amp`: on CUDA, and on CPUs whose oneDNN
has bf16 kernels; fp32 master weights and losses) and channels_last memory
(`train.channels_last`). On this project's 2-core AMX CPU, bf16 + channels_last
trains the CPU default 3.7x faster than fp32 in the default layout
(`benchmarks/train.py`). `train.compile` works on both. On CPU the loop runs
with `torch.use_deterministic_algorithms(True)`, so a fixed seed gives the same
weights, and a resumed run the same weights as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline.config import Config
from pipeline.jsonio import read_json, write_json
from pipeline.layout import Layout
from pipeline.losses import discriminator_losses, generator_losses
from pipeline.models import build_discriminator, build_generator, save_generator
from pipeline.train import distributed
from pipeline.train.checkpoint import (
    CheckpointMismatch,
    load_checkpoint,
    losses_from_json,
    losses_to_json,
    remove_killed_saves,
    run_identity,
    save_checkpoint,
    set_rng_state,
)
from pipeline.train.curves import first_logged, log_window, open_curves, trim_curves
from pipeline.train.loader import DataError, fixed_rows, make_loader
from pipeline.train.monitor import Monitor
from pipeline.train.samples import render_grid, write_grid
from pipeline.train.schedule import lr_scale

log = logging.getLogger("s2p.train")

GRID_ROWS = 6
FINAL_WINDOW = 50  # steps averaged into the final metrics


def cpu_has_bf16() -> bool:
    """oneDNN runs bf16 convolutions natively here (AVX512-BF16/AMX, or AVX512 with
    its fast emulation); elsewhere bf16 on the CPU is slower than fp32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Trainer:
    """G, D, their optimisers and one training step; no I/O."""

    def __init__(self, cfg: Config, device: torch.device, d: distributed.Dist = distributed.Dist()):
        self.cfg, self.device = cfg, device
        t = cfg.train
        self.cuda = device.type == "cuda"
        self.amp = t.amp and (self.cuda or cpu_has_bf16())
        self.memory = torch.channels_last if t.channels_last else torch.contiguous_format
        self.G = build_generator(cfg.model).to(device, memory_format=self.memory)
        self.D = build_discriminator(cfg.model).to(device, memory_format=self.memory)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
        self.g_model, self.d_model = self.G, self.D
        if d.world > 1:
            ids = [device.index] if self.cuda else None
            self.g_model = DistributedDataParallel(self.G, device_ids=ids)
            self.d_model = DistributedDataParallel(self.D, device_ids=ids)
        self.d_plain = self.D
        if t.compile:
            self.g_model = torch.compile(self.g_model)
            self.d_model = torch.compile(self.d_model)
            self.d_plain = torch.compile(self.D)

    def _autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def set_lr_scale(self, scale: float) -> None:
        t = self.cfg.train
        for opt, base in ((self.opt_g, t.lr_g), (self.opt_d, t.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * scale

    def to_device(self, batch: dict) -> tuple[torch.Tensor, ...]:
        nb = self.cuda
        sketch = batch["sketch"].to(self.device, non_blocking=nb, memory_format=self.memory)
        color = batch["color"].to(self.device, non_blocking=nb, memory_format=self.memory)
        return (sketch, color, batch["reference"].to(self.device, non_blocking=nb),
                batch["style"].to(self.device, non_blocking=nb),
                batch["flipped"].to(self.device, non_blocking=nb))

    def step(self, sketch, color, reference, style, flipped) -> dict[str, torch.Tensor]:
        """One D step then one G step; returns the detached loss terms."""
        m, clip = self.cfg.model, self.cfg.train.grad_clip
        # D's target is V(y) of the unmirrored image (fc1 knows left from right):
        # D sees every image, real or painted, mirrored back.
        upright = flipped.view(-1, 1, 1, 1)
        unflip = lambda img: torch.where(upright, img.flip(-1), img)  # noqa: E731
        with self._autocast():
            out, guide_grey, guide_colour = self.g_model(sketch, reference)
            # Real and fake in one forward: one DDP reduction per backward.
            logits = self.d_model(torch.cat([unflip(color), unflip(out.detach())]))
        real_logits, fake_logits = logits.float().chunk(2)
        d_loss = discriminator_losses(real_logits, fake_logits, style, m)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss["total"].backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(self.D.parameters(), clip)
        self.opt_d.step()

        self.D.requires_grad_(False)
        try:
            with self._autocast():
                fake_logits_g = self.d_plain(unflip(out))
            g_loss = generator_losses(out, guide_grey, guide_colour, color,
                                      fake_logits_g.float(), style, m)
            self.opt_g.zero_grad(set_to_none=True)
            g_loss["total"].backward()
        finally:
            self.D.requires_grad_(True)
        if clip:
            torch.nn.utils.clip_grad_norm_(self.G.parameters(), clip)
        self.opt_g.step()
        terms = {f"g_{k}": v.detach() for k, v in g_loss.items()}
        terms.update({f"d_{k}": v.detach() for k, v in d_loss.items()})
        return terms

    def state(self) -> dict:
        return {"G": self.G, "D": self.D, "opt_g": self.opt_g, "opt_d": self.opt_d}

    def load(self, ckpt: dict) -> None:
        self.G.load_state_dict(ckpt["G"])
        self.D.load_state_dict(ckpt["D"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])


def style_statistics(root: Path, dim: int, max_rows: int = 4096):
    """Per-dimension mean and std of the style codes G sees in training (own and
    augmented), over the first `max_rows` rows of the *train* split in shard
    order: deterministic on every rank, and no val/test row leaks into the model."""
    import pyarrow.compute as pc

    from pipeline.shards import aligned_shards, iter_aligned_batches
    from pipeline.shards import style_arrays
    from pipeline.train.loader import shard_dirs

    colour_dir, _, style_dir = shard_dirs(root)
    parts, rows = [], 0
    for shard in aligned_shards([colour_dir, style_dir]):
        for table in iter_aligned_batches(shard, [["split"], ["style", "style_aug"]], 256):
            table = table.filter(pc.equal(table.column("split"), "train"))
            if not table.num_rows:
                continue
            if table.schema.field("style").type.list_size != dim:
                raise DataError(f"{shard.paths[1]}: style codes of size "
                                f"{table.schema.field('style').type.list_size}, "
                                f"model.style_dim is {dim}")
            style, aug, valid = style_arrays(table)  # undecodable rows come back invalid
            parts += [style[valid], aug[valid].reshape(-1, dim)]
            rows += int(valid.sum())
            if rows >= max_rows:
                break
        if rows >= max_rows:
            break
    codes = np.concatenate(parts) if parts else np.empty((0, dim))
    if not len(codes):
        raise DataError(f"{style_dir}: no train-split style codes to standardise with")
    arr = torch.from_numpy(codes.astype(np.float32))
    return arr.mean(0), arr.std(0)


def seed_everything(seed: int, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)


def budget_reached(cfg: Config, step: int, seconds: float) -> bool:
    t = cfg.train
    if t.max_steps is not None and step >= t.max_steps:
        return True
    return t.max_minutes is not None and seconds >= t.max_minutes * 60


def _upstream(layout: Layout) -> dict:
    featurize = read_json(layout.metrics("featurize"), default={})
    extract = read_json(layout.metrics("extract"), default={})
    source = {"style_encoder": featurize.get("style_encoder"),
              "extractor": extract.get("method_used")}
    for key, stage in (("style_encoder", "featurize"), ("extractor", "extract")):
        if source[key] is None:
            log.warning("train: %s unknown (%s has no metrics/%s.json); recorded as null",
                        key, layout.root, stage)
    return source


def train(cfg: Config) -> dict | None:
    """Train to the budget (resuming from the latest checkpoint when it belongs
    to this run), export the generator. Returns the metrics on rank 0."""
    d = distributed.from_env()
    device = distributed.select_device(cfg, d)
    distributed.init(d, device)
    try:
        return _train(cfg, d, device)
    finally:
        distributed.shutdown()


def _restore(cfg: Config, trainer: Trainer, identity: dict, d: distributed.Dist):
    """Load the latest checkpoint when it belongs to this run and prepare rank 0's
    output folders; returns (start step, seconds so far, checkpoint or None,
    the summary stored with it)."""
    layout = cfg.layout
    start, seconds, ckpt, summary = 0, 0.0, None, {}
    if layout.checkpoint.is_file():
        try:
            ckpt = load_checkpoint(layout.checkpoint, identity)
        except CheckpointMismatch as why:
            log.warning("train: %s; starting from step 0", why)
    budget = cfg.train.max_steps
    if ckpt is not None and budget is not None and int(ckpt["step"]) > budget:
        log.warning("train: %s is at step %d, past train.max_steps %d; starting from step 0",
                    layout.checkpoint, int(ckpt["step"]), budget)
        ckpt = None
    if ckpt is not None:
        trainer.load(ckpt)
        start, seconds = int(ckpt["step"]), float(ckpt["seconds"])
        summary = json.loads(ckpt["summary"])
        log.info("train: resuming from %s at step %d", layout.checkpoint, start)
    distributed.barrier()  # every rank has read the checkpoint before rank 0 touches its folder
    if d.main:
        remove_killed_saves(layout.checkpoint, layout.generator)
        if ckpt is None:  # a mismatched checkpoint stays until this run saves its own
            for folder in (layout.train_samples, layout.dvclive):
                shutil.rmtree(folder, ignore_errors=True)
        else:
            trim_curves(layout.dvclive, start + 1)
    distributed.barrier()
    return start, seconds, ckpt, summary


def _train(cfg: Config, d: distributed.Dist, device: torch.device) -> dict | None:
    t = cfg.train
    layout = cfg.layout
    seed_everything(t.seed, device)  # same initial weights on every rank
    trainer = Trainer(cfg, device, d)
    identity = run_identity(cfg)

    start, seconds, ckpt, summary = _restore(cfg, trainer, identity, d)
    loader = make_loader(cfg, start_step=start, rank=d.rank, world=d.world,
                         pin_memory=device.type == "cuda")
    if ckpt is None:  # a resumed G already holds them
        mean, std = style_statistics(cfg.data_root, cfg.model.style_dim)
        trainer.G.set_style_stats(mean.to(device), std.to(device))
    grid_rows, live, monitor = _observers(cfg, trainer, device, d, resumed=ckpt is not None)
    watched: dict = summary.get("monitor", {})
    if ckpt is not None:
        set_rng_state(ckpt["rng"])
    del ckpt

    step, window = start, []
    recent: deque = deque(losses_from_json(summary, device), maxlen=FINAL_WINDOW)
    images = t.batch_size * d.world  # per step, all ranks together
    bar = _progress(cfg, start) if d.main else None
    batches = iter(loader)
    run_started = window_started = time.perf_counter()
    seconds_before = seconds
    done = budget_reached(cfg, step, seconds)
    while not done:
        trainer.set_lr_scale(lr_scale(t, step))
        terms = trainer.step(*trainer.to_device(next(batches)))
        step += 1
        window.append(terms)
        recent.append(terms)
        if d.main:
            bar.update(1)
            if step % t.log_every == 0:
                now = time.perf_counter()
                rate = images * len(window) / (now - window_started)
                if monitor is not None and step % t.monitor_every == 0:
                    watched = monitor.score()  # not counted in images/s (monitor.seconds)
                log_window(live, window, step, cfg, rate, bar,
                           watched if step % t.monitor_every == 0 else {})
                window, window_started = [], time.perf_counter()
            if step % t.sample_every == 0 or step == start + 1:
                write_grid(render_grid(trainer.G, grid_rows, device), layout.train_samples, step)
        seconds = seconds_before + time.perf_counter() - run_started
        done = budget_reached(cfg, step, seconds)
        if t.max_minutes is not None:  # clocks differ: rank 0's word must hold for all
            done = distributed.any_rank(done, device)
        if monitor is not None and done and step % t.monitor_every:
            watched = monitor.score()  # the final step's, kept with the checkpoint
        if d.main and (step % t.checkpoint_every == 0 or done):
            busy = time.perf_counter() - run_started - (monitor.seconds if monitor else 0.0)
            rate = images * (step - start) / busy
            summary = _checkpoint(cfg, trainer, identity, step, seconds, recent, watched, rate)
    if not d.main:
        return None
    bar.close()
    rate = images * len(window) / (time.perf_counter() - window_started) if window else 0.0
    _close_curves(cfg, trainer, live, grid_rows, device, window, rate, step, start, watched)
    # `summary` is the one stored with the final checkpoint.
    return _finish(cfg, trainer, layout, step, start, seconds, summary, device, d)


def _observers(cfg: Config, trainer: Trainer, device, d: distributed.Dist, resumed: bool):
    """Rank 0's sample-grid rows, dvclive curves and reference-following monitor."""
    if not d.main:
        return None, None, None
    grid_rows = fixed_rows(cfg.data_root, GRID_ROWS, cfg.data.resolution, cfg.model.style_dim)
    live = open_curves(cfg.layout.dvclive, resume=resumed)
    monitor = Monitor(cfg, trainer.G, device) if cfg.train.monitor_pairs else None
    return grid_rows, live, monitor


def _checkpoint(cfg: Config, trainer: Trainer, identity: dict, step: int, seconds: float,
                recent, watched: dict, rate: float) -> dict:
    """Save the checkpoint; returns the summary stored with it."""
    summary = {"loss_final": _mean(recent), "loss_final_window": len(recent),
               "images_per_s": rate, "monitor": watched, "loss_window": losses_to_json(recent)}
    save_checkpoint(cfg.layout.checkpoint, **trainer.state(), step=step, seconds=seconds,
                    cfg=cfg, identity=identity, summary=summary)
    return summary


def _close_curves(cfg: Config, trainer: Trainer, live, grid_rows, device, window: list,
                  rate: float, step: int, start: int, watched: dict) -> None:
    """Log the last partial window and the last sample grid, then close dvclive."""
    t = cfg.train
    if window:
        log_window(live, window, step, cfg, rate, None, watched if step % t.monitor_every else {})
    if step > start and step % t.sample_every:
        write_grid(render_grid(trainer.G, grid_rows, device), cfg.layout.train_samples, step)
    live.end()


def _mean(terms) -> dict[str, float]:
    if not terms:
        return {}
    return {k: round(float(torch.stack([r[k] for r in terms]).mean()), 6) for k in terms[0]}


def _progress(cfg: Config, start: int):
    from tqdm import tqdm

    return tqdm(total=cfg.train.max_steps, initial=start, unit="step", desc="train",
                mininterval=5)


def _finish(cfg, trainer, layout, step, start, seconds, summary, device, d) -> dict:
    """Export the generator and write metrics/train.json. `summary` holds the
    final-window losses and images/s (from the checkpoint when this run added
    no steps)."""
    steps_this_run = step - start
    upstream = _upstream(layout)
    extra = {
        "resolution": cfg.data.resolution,
        "featurize": cfg.featurize.model_dump(
            include={"code", "weights", "input_size", "seed", "precision"}),
        "extract": cfg.extract.model_dump(include={"method", "weights", "variant"}),
        "style_encoder": upstream["style_encoder"],
        "extractor": upstream["extractor"],
        "train": {"steps": step, "seed": cfg.train.seed, "batch_size": cfg.train.batch_size,
                  "world_size": d.world},
    }
    save_generator(trainer.G, cfg.model, layout.generator, extra=extra)
    final = summary.get("loss_final", {})
    metrics = {
        "steps": step,
        "steps_this_run": steps_this_run,
        "resumed_from_step": start,
        "train_seconds": round(seconds, 2),
        "images_per_s": round(summary.get("images_per_s", 0.0), 2),
        "loss_final": final,
        "loss_final_window": summary.get("loss_final_window", 0),
        "loss_first_logged": first_logged(layout.dvclive),
        "monitor_final": summary.get("monitor", {}),
        "device": str(device.type),
        "world_size": d.world,
        "precision": "bf16" if trainer.amp else "fp32",
        "compile": cfg.train.compile,
        **upstream,
    }
    write_json(layout.metrics("train"), metrics)
    log.info("train: %d steps (%d this run) in %.0f s, %.1f images/s; final g_l1 %s",
             step, steps_this_run, seconds, metrics["images_per_s"], final.get("g_l1"))
    return metrics
