"""Training throughput: the loader, and ours vs a plain loop that runs VGG online.

    python benchmarks/train.py [--params params.yaml] [--data data] [--steps 4]
                               [--workers 0 2] [--samples 512] [--repeats 1]
                               [--skip-train] [--breakdown] [--compile] [--json out.json]

1. Loader images/s (`make_loader`: decode, crop/flip, float tensors in the
   training process; 0 and N workers) against a bare loop in as many processes
   that reads the same columns (colour, sketch, style codes) of the same row
   groups and decodes both PNGs, nothing else. Settings are measured in
   interleaved rounds (`--repeats`); the figures are medians. Wall-clock rates
   swing with whatever else runs on the machine, so the CPU time each side
   spends per image (all its processes) is printed too, and with
   `--breakdown` where the loader's CPU goes, stage by stage. Also printed:
   the loader's rate at params' num_workers over what one training step (b) takes.
2. Training images/s at params' model/resolution/batch:
   (a) plain: eager fp32, the style code V(y) computed online by VGG19 from each
       batch (what a training script without a featurize stage does);
   (b) ours: precomputed codes from the style shards, AMP bf16 + channels_last
       on CUDA (fp32 on CPU), torch.compile with --compile or train.compile.
   The ratio is (b)/(a).
3. On CUDA only: the paper-scale generator (benchmarks/model.py's PAPER profile)
   at 256², bf16 + channels_last, on random inputs. Skipped on CPU.

Data: `--data` root if it holds colour, sketch and style shards, else tiny fake
shards in a temporary folder (tests/synthetic.py). Timings skip a
warm-up step; the first batch of a DataLoader (worker start-up) is excluded.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout, not whatever an editable install points at
sys.path.insert(1, str(REPO / "tests"))  # the synthetic shards are a test fixture

from pipeline.config import ModelConfig, load_config  # noqa: E402
from pipeline.images import decode_stored  # noqa: E402
from pipeline.shards import read_aligned  # noqa: E402
from pipeline.train.loader import (  # noqa: E402
    COLUMNS,
    Packed,
    ShardStream,
    _fixed_lists,
    _style_aug,
    index_units,
    make_loader,
    worker_context,
)
from pipeline.train.loop import Trainer, cpu_has_bf16, seed_everything  # noqa: E402
from synthetic import write_fake_shards  # noqa: E402


def paper_profile() -> dict:
    spec = importlib.util.spec_from_file_location("bench_model", REPO / "benchmarks/model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return dict(mod.PAPER)


def _bare_rows(root: Path, dim: int, part: int, parts: int):
    """Endless: read this part's row groups (every `parts`-th unit, as the loader
    reads them), turn the style columns into arrays, decode both PNGs per row."""
    shards, units, _ = index_units(root, "train")
    mine = units[part::parts] or units
    while True:
        for unit in mine:
            shard = shards[unit.shard]
            cols = read_aligned(shard, COLUMNS, unit.group)
            _fixed_lists(cols.column("style"), dim, shard.paths[2])
            _style_aug(cols.column("style_aug"), dim, shard.paths[2])
            for c, s in zip(cols.column("color").to_pylist(), cols.column("sketch").to_pylist()):
                decode_stored(c, 3)
                decode_stored(s, 1)
                yield


def _cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system, all threads) used so far by a process."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bare_run(root, dim, part, parts, limit, barrier=None, out=None):
    rows = _bare_rows(root, dim, part, parts)
    next(rows)  # start-up is not throughput (the loader's first batch is skipped too)
    if barrier is not None:
        barrier.wait()
    started, cpu = time.perf_counter(), _cpu()
    for _ in range(limit):
        next(rows)
    result = (limit, time.perf_counter() - started, _cpu() - cpu)
    if out is not None:
        out.put(result)
    return result


def bare_decode(root: Path, dim: int, limit: int, processes: int) -> tuple[float, float]:
    """(images/s, CPU µs per image) of the bare loop in `processes` worker
    processes (0: this one)."""
    if processes == 0:
        n, seconds, cpu = _bare_run(root, dim, 0, 1, limit)
        return n / seconds, cpu / n * 1e6
    ctx = worker_context()
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_bare_run, args=(root, dim, p, processes, limit // processes,
                                                 barrier, out)) for p in range(processes)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    n = sum(r[0] for r in results)
    return n / max(r[1] for r in results), sum(r[2] for r in results) / n * 1e6


def loader_rate(cfg, limit: int) -> tuple[float, float, float]:
    """(images/s, CPU µs per image: this process and the workers, and this
    process alone) of make_loader."""
    loader = make_loader(cfg)
    it = iter(loader.loader)  # the DataLoader itself, to see its worker processes
    next(it)  # worker start-up is not throughput
    pids = [w.pid for w in getattr(it, "_workers", [])]
    cpu = [_cpu()] + [_cpu(p) for p in pids]
    n, started = 0, time.perf_counter()
    while n < limit:
        batch = next(it)
        n += len((batch.unpack() if isinstance(batch, Packed) else batch)["id"])
    seconds = time.perf_counter() - started
    main = _cpu() - cpu[0]
    used = main + sum(_cpu(p) - c for p, c in zip(pids, cpu[1:]))
    return n / seconds, used / n * 1e6, main / n * 1e6


def _stage_cpu(items, per_item: int, limit: int) -> float:
    """CPU µs per image of drawing `limit` images from the generator `items`."""
    next(items)  # start-up
    n, cpu = 0, _cpu()
    while n < limit:
        next(items)
        n += per_item
    return (_cpu() - cpu) / n * 1e6


def breakdown(cfg, root: Path, limit: int, repeats: int) -> list[tuple[str, float]]:
    """Where the loader's CPU goes, in this process (0 workers), stage by stage:
    each stage does all the work of the one before it, plus its own."""
    t, dim, bs = cfg.train, cfg.model.style_dim, cfg.train.batch_size

    def stream():
        return ShardStream(root, "train", resolution=cfg.data.resolution, crop=t.random_crop,
                           flip=t.flip, self_reference=t.augmented_self_reference, seed=t.seed,
                           shuffle_buffer=t.shuffle_buffer, batch_size=bs, style_dim=dim)

    zero = cfg.model_copy(update={"train": t.model_copy(update={"num_workers": 0})})
    stages = {
        "bare read + decode": lambda: (_bare_rows(root, dim, 0, 1), 1),
        "+ stream rows (keys, draws, crop/flip, codes)": lambda: (stream()._rows(), 1),
        "+ packed uint8 batches (Packed.of)": lambda: (stream().batches(), bs),
        "+ float tensors (Packed.unpack)": lambda: ((p.unpack() for p in stream().batches()), bs),
        "make_loader, 0 workers (+ DataLoader)": lambda: (iter(make_loader(zero)), bs),
    }
    timed: dict[str, list[float]] = {k: [] for k in stages}
    for _ in range(repeats):
        for name, make in stages.items():
            timed[name].append(_stage_cpu(*make(), limit))
    return [(name, statistics.median(v)) for name, v in timed.items()]


def train_rate(cfg, device, steps: int, online_vgg: bool) -> float:
    seed_everything(cfg.train.seed, torch.device("cpu"))
    torch.use_deterministic_algorithms(False)
    trainer = Trainer(cfg, device)
    encoder = None
    if online_vgg:
        from pipeline.style_encoder import StyleEncoder

        f = cfg.featurize
        encoder = StyleEncoder(f.weights, f.input_size, f.seed, "fp32", f.code).to(device)
    it = iter(make_loader(cfg, pin_memory=device.type == "cuda"))
    next(it)

    def one():
        batch = next(it)
        sketch, color, reference, style, flipped = trainer.to_device(batch)
        if encoder is not None:  # the plain loop: V(y) from the batch, every step
            upright = torch.where(flipped.view(-1, 1, 1, 1), color.flip(-1), color)
            style = encoder((upright.float() + 1) / 2)  # V of the unmirrored image
            reference = style
        trainer.step(sketch, color, reference, style, flipped)

    one()  # warm-up (and compilation)
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        one()
    _sync(device)
    return cfg.train.batch_size * steps / (time.perf_counter() - started)


def paper_rate(cfg, device, steps: int, batch: int, size: int, compile_: bool) -> float:
    model = ModelConfig(**{**cfg.model.model_dump(), **paper_profile()})
    train = cfg.train.model_copy(update={"amp": True, "channels_last": True,
                                         "compile": compile_, "batch_size": batch})
    pcfg = cfg.model_copy(update={"model": model, "train": train})
    torch.manual_seed(0)
    trainer = Trainer(pcfg, device)
    args = (torch.rand(batch, 1, size, size, device=device) * 2 - 1,
            torch.rand(batch, 3, size, size, device=device) * 2 - 1,
            torch.rand(batch, model.style_dim, device=device),
            torch.rand(batch, model.style_dim, device=device))
    args = (args[0].contiguous(memory_format=torch.channels_last),
            args[1].contiguous(memory_format=torch.channels_last), *args[2:])
    for _ in range(2):
        trainer.step(*args)
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.step(*args)
    _sync(device)
    return batch * steps / (time.perf_counter() - started)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--data", default=None, help="data root with colour/sketch/style shards")
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per setting")
    ap.add_argument("--samples", type=int, default=512, help="images timed per loader setting")
    ap.add_argument("--repeats", type=int, default=1,
                    help="interleaved rounds of the loader settings (medians reported)")
    ap.add_argument("--skip-train", action="store_true", help="loader figures only")
    ap.add_argument("--breakdown", action="store_true",
                    help="also: the loader's CPU per image stage by stage, in this process")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--compile", action="store_true", help="torch.compile in (b)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--paper-batch", type=int, default=16)
    ap.add_argument("--paper-size", type=int, default=256)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    cfg = load_config(args.params)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    tmp = None
    root = Path(args.data) if args.data else None
    if root is None or not all(d.is_dir() for d in shard_dirs(root)):
        tmp = tempfile.TemporaryDirectory(prefix="s2p-bench-")
        root = Path(tmp.name) / "data"
        print(f"no shards under {args.data or '(none given)'}: writing 256 fake rows at "
              f"{cfg.data.resolution}² to {root}", flush=True)
        write_fake_shards(root, 256, cfg.data.resolution, dim=cfg.model.style_dim,
                          shard_rows=64, row_group_rows=16, aug=1, splits=(1.0, 0.0))
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(root)})})
    rows: list[tuple[str, str, float]] = []
    res, bs = cfg.data.resolution, cfg.train.batch_size

    timed: dict[tuple[str, int], list[tuple]] = {}
    for _ in range(args.repeats):  # interleaved, so a busy spell hits every setting
        for w in args.workers:
            timed.setdefault(("bare", w), []).append(
                bare_decode(root, cfg.model.style_dim, args.samples, w))
            lcfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_workers": w})})
            timed.setdefault(("loader", w), []).append(loader_rate(lcfg, args.samples))
    med = lambda values: statistics.median(values)  # noqa: E731
    rate = {k: med([c[0] for c in v]) for k, v in timed.items()}
    cpu = {k: med([c[1] for c in v]) for k, v in timed.items()}
    for w in args.workers:
        pairs = zip(timed[("loader", w)], timed[("bare", w)])
        rows.append(("loader", f"bare read + decode, {w} worker process(es)", rate[("bare", w)]))
        rows.append(("loader", f"make_loader, {w} worker(s), batch {bs}", rate[("loader", w)]))
        rows.append(("loader", f"ratio loader/bare, {w} worker(s) (median of rounds)",
                     med([lo[0] / ba[0] for lo, ba in pairs])))
        rows.append(("cpu", f"bare: CPU µs per image, {w} worker process(es)", cpu[("bare", w)]))
        rows.append(("cpu", f"loader: CPU µs per image, {w} worker(s), all processes",
                     cpu[("loader", w)]))
        if w:
            rows.append(("cpu", f"loader: CPU µs per image, {w} worker(s), training process",
                         med([lo[2] for lo in timed[("loader", w)]])))
        rows.append(("cpu", f"ratio bare/loader CPU per image, {w} worker(s)",
                     med([ba[1] / lo[1] for lo, ba in zip(timed[("loader", w)],
                                                          timed[("bare", w)])])))

    if args.breakdown:
        for name, value in breakdown(cfg, root, args.samples, args.repeats):
            rows.append(("cpu", f"breakdown: {name}", value))

    if not args.skip_train:
        plain = cfg.model_copy(update={"train": cfg.train.model_copy(
            update={"amp": False, "compile": False, "augmented_self_reference": False})})
        ours = cfg.model_copy(update={"train": cfg.train.model_copy(
            update={"compile": args.compile or cfg.train.compile})})
        a = train_rate(plain, device, args.steps, online_vgg=True)
        b = train_rate(ours, device, args.steps, online_vgg=False)
        bf16 = ours.train.amp and (device.type == "cuda" or cpu_has_bf16())  # as Trainer decides
        prec = ("bf16 autocast" if bf16 else "fp32") + (
            "+channels_last" if ours.train.channels_last else "")
        comp = "+compile" if ours.train.compile else ""
        rows.append(("train", f"(a) plain fp32 eager, VGG19 online @{cfg.featurize.input_size}²", a))
        rows.append(("train", f"(b) ours: precomputed codes, {prec}{comp}", b))
        rows.append(("train", "ratio (b)/(a)", b / a))
        w = cfg.train.num_workers
        if ("loader", w) in rate:
            rows.append(("train", f"ratio loader ({w} workers, params)/step (b)",
                         rate[("loader", w)] / b))

    if device.type == "cuda" and not args.skip_train:
        for c in (False, True):
            rows.append(("paper", f"G+D step @{args.paper_size}², batch {args.paper_batch}, "
                         f"bf16{' +compile' if c else ''}",
                         paper_rate(cfg, device, max(args.steps, 5), args.paper_batch,
                                    args.paper_size, c)))
    elif not args.skip_train:
        rows.append(("paper", f"@{args.paper_size}²: skipped (no CUDA device)", float("nan")))

    print(f"\ndevice {device}, torch threads {torch.get_num_threads()}, resolution {res}², "
          f"batch {bs}, model depth {cfg.model.depth} base {cfg.model.base_width}")
    print(f"repeats {args.repeats}, samples {args.samples} per setting (medians)")
    print(f"{'part':7} {'setting':58} {'images/s':>10}   (cpu rows: µs)")
    for part, name, value in rows:
        shown = "x" if name.startswith("ratio") else ""
        print(f"{part:7} {name:58} {value:>10.2f}{shown}")
    result = {"device": str(device), "threads": torch.get_num_threads(), "resolution": res,
              "batch": bs, "repeats": args.repeats, "samples": args.samples,
              "raw": {f"{k[0]}/{k[1]}": [dict(zip(("images_s", "cpu_us", "main_cpu_us"), r))
                                         for r in v] for k, v in timed.items()}, "rows": [{"part": p, "setting": n, "value": v} for p, n, v in rows]}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
