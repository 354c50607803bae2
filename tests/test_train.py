"""The training loop: it learns on a fixed batch, checkpoints round-trip, and a
run that crashes and resumes ends with the same weights as one that did not."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import tiny_config
from pipeline.train import loop
from pipeline.train.checkpoint import (
    CheckpointMismatch,
    load_checkpoint,
    run_identity,
    save_checkpoint,
    set_rng_state,
)
from pipeline.train.loader import ShardStream
from synthetic import write_fake_shards

CPU = torch.device("cpu")
KEYS = ("sketch", "color", "reference", "style", "flipped")


pytestmark = pytest.mark.usefixtures("one_thread")


def fake_data(root, rows=24, size=32, dim=4096):
    return write_fake_shards(root / "data", rows, size, dim=dim, shard_rows=8, row_group_rows=4)


def fixed_batch(cfg, rows=4) -> dict:
    ds = ShardStream(cfg.data_root, "train", resolution=32, self_reference=True)
    samples = [s for _, s in zip(range(rows), ds)]
    return {k: torch.stack([s[k] for s in samples]) for k in KEYS}


def test_losses_fall_on_a_fixed_batch(tmp_path):
    cfg = tiny_config(tmp_path, train={"lr_g": 1e-3, "lr_d": 1e-3})
    fake_data(tmp_path)
    loop.seed_everything(0, CPU)
    trainer = loop.Trainer(cfg, CPU)
    args = trainer.to_device(fixed_batch(cfg))
    history = [trainer.step(*args) for _ in range(40)]
    first = sum(float(h["g_l1"]) for h in history[:3]) / 3
    last = sum(float(h["g_l1"]) for h in history[-3:]) / 3
    assert last < 0.6 * first, (first, last)
    assert set(history[0]) == {"g_l1", "g_guide_grey", "g_guide_colour", "g_adversarial",
                               "g_total", "d_real", "d_fake", "d_total"}
    assert float(history[-1]["g_guide_grey"]) < float(history[0]["g_guide_grey"])


def test_checkpoint_round_trip(tmp_path):
    cfg = tiny_config(tmp_path)
    fake_data(tmp_path)
    loop.seed_everything(0, CPU)
    a = loop.Trainer(cfg, CPU)
    batch = fixed_batch(cfg)
    a.step(*a.to_device(batch))  # so the optimisers have state
    identity = run_identity(cfg)
    path = tmp_path / "ck" / "latest.pt"
    save_checkpoint(path, **a.state(), step=7, seconds=1.5, cfg=cfg, identity=identity)
    expected_next = torch.rand(3)

    torch.manual_seed(123)
    b = loop.Trainer(cfg, CPU)
    state = load_checkpoint(path, identity)  # weights_only=True inside
    b.load(state)
    set_rng_state(state["rng"])
    assert state["step"] == 7 and state["seconds"] == 1.5
    assert json.loads(state["config"])["train"]["batch_size"] == cfg.train.batch_size
    for x, y in ((a.G, b.G), (a.D, b.D)):
        for (k, v), (_, w) in zip(x.state_dict().items(), y.state_dict().items()):
            assert torch.equal(v, w), k
    sa, sb = a.opt_g.state_dict()["state"], b.opt_g.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert torch.equal(torch.rand(3), expected_next)
    # one more identical step on both: same result
    ta, tb = a.step(*a.to_device(batch)), b.step(*b.to_device(batch))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)

    other = tiny_config(tmp_path, model={"base_width": 16})
    with pytest.raises(CheckpointMismatch, match="base_width"):
        load_checkpoint(path, run_identity(other))
    path.write_bytes(b"truncated")
    with pytest.raises(ValueError, match="latest.pt"):
        load_checkpoint(path, identity)


def _weights(root):
    state = torch.load(root / "train/checkpoints/latest.pt", weights_only=True)
    return state


def test_crash_and_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    overrides = {"train": {"max_steps": 6, "checkpoint_every": 2, "sample_every": 3,
                           "log_every": 1, "lr_decay": 0.5}}  # the schedule resumes too
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    for root in (whole, crashed):
        fake_data(root)
    cfg_whole = tiny_config(whole, **overrides)
    cfg_crash = tiny_config(crashed, **overrides)

    whole_metrics = loop.train(cfg_whole)

    calls = {"n": 0}
    real_step = loop.Trainer.step

    def dying_step(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # step 4 dies after checkpoint 2 was written
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, *args)

    monkeypatch.setattr(loop.Trainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg_crash)
    assert _weights(crashed / "data")["step"] == 2
    monkeypatch.setattr(loop.Trainer, "step", real_step)
    metrics = loop.train(cfg_crash)

    assert metrics["steps"] == 6 and metrics["resumed_from_step"] == 2
    assert metrics["steps_this_run"] == 4
    # The final losses average the same (last 50, here all 6) steps as without the crash.
    assert metrics["loss_final_window"] == whole_metrics["loss_final_window"] == 6
    assert metrics["loss_final"] == whole_metrics["loss_final"]
    a, b = _weights(whole / "data"), _weights(crashed / "data")
    assert a["step"] == b["step"] == 6
    # The last step ran at a third of the rate: the fall takes the last 3 of 6 steps.
    lr_g = cfg_whole.train.lr_g
    assert a["opt_g"]["param_groups"][0]["lr"] == pytest.approx(lr_g / 3)
    assert b["opt_g"]["param_groups"][0]["lr"] == pytest.approx(lr_g / 3)
    for part in ("G", "D"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    # the loss curve has each step once, in order
    tsv = (crashed / "data/train/dvclive/plots/metrics/loss/g_l1.tsv").read_text().splitlines()
    head = tsv[0].split("\t")
    steps = [int(line.split("\t")[head.index("step")]) for line in tsv[1:]]
    assert steps == [1, 2, 3, 4, 5, 6]

    # Rerun at the same budget: nothing to train, same export and metrics.
    again = loop.train(cfg_crash)
    assert again["steps_this_run"] == 0 and again["loss_final"] == metrics["loss_final"]
    assert again["images_per_s"] == metrics["images_per_s"] > 0
    # A finished run asked for more steps continues from its checkpoint.
    more = loop.train(tiny_config(crashed, train={**overrides["train"], "max_steps": 8}))
    assert more["resumed_from_step"] == 6 and more["steps"] == 8
    # A budget below the checkpoint's step is another run (an ablation at half the
    # steps), not a finished one: it starts over instead of exporting step 8's weights.
    fewer = loop.train(tiny_config(crashed, train={**overrides["train"], "max_steps": 4}))
    assert fewer["resumed_from_step"] == 0 and fewer["steps"] == 4
    # Other model settings: the old checkpoint is not resumed.
    fresh = loop.train(tiny_config(crashed, train=overrides["train"],
                                   model={"style_proj": 4}))
    assert fresh["resumed_from_step"] == 0 and fresh["steps"] == 6
    shutil.rmtree(tmp_path)


def test_starting_over_keeps_the_last_checkpoint_until_it_has_its_own(tmp_path, monkeypatch):
    """Changed settings start over, but the previous checkpoint is only replaced
    by the new run's first one: a new run that fails before that destroys nothing.
    Temporary files of a killed save (checkpoint, export) are removed."""
    fake_data(tmp_path)
    train = {"max_steps": 2, "checkpoint_every": 2, "log_every": 1, "sample_every": 2}
    loop.train(tiny_config(tmp_path, train=train))
    latest = tmp_path / "data/train/checkpoints/latest.pt"
    first = latest.read_bytes()
    leftover = latest.with_name(".latest.pt.tmp-4242")
    leftover.write_bytes(b"half a checkpoint")
    export_leftover = tmp_path / "data/models/.generator.pt.tmp-4243"
    export_leftover.write_bytes(b"half an export")

    def failing_step(self, *args):
        raise FloatingPointError("simulated failure before the first checkpoint")

    other = tiny_config(tmp_path, train=train, model={"style_proj": 4})
    monkeypatch.setattr(loop.Trainer, "step", failing_step)
    with pytest.raises(FloatingPointError):
        loop.train(other)
    assert latest.read_bytes() == first
    assert not leftover.exists() and not export_leftover.exists()
    monkeypatch.undo()
    assert loop.train(other)["resumed_from_step"] == 0
    with pytest.raises(CheckpointMismatch):  # it now belongs to the new settings
        load_checkpoint(latest, run_identity(tiny_config(tmp_path, train=train)))


def test_style_statistics_use_the_train_split_only(tmp_path):
    """val/test codes must not leak into the model's standardisation."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.shards import shard_paths
    from pipeline.shards import style_arrays

    rows = fake_data(tmp_path, rows=40, dim=16)
    splits = {r["id"]: r["split"] for r in rows}
    assert {"train", "val", "test"} <= set(splits.values()) or len(set(splits.values())) > 1
    train_codes, all_codes = [], []
    for path in shard_paths(tmp_path / "data/shards/style"):
        table = pq.read_table(path)
        style, aug, _ = style_arrays(table)
        for i, row_id in enumerate(table.column("id").to_pylist()):
            codes = [style[i], *aug[i]]
            all_codes += codes
            if splits[row_id] == "train":
                train_codes += codes
    mean, std = loop.style_statistics(tmp_path / "data", 16)
    expected = torch.from_numpy(np.stack(train_codes).astype(np.float32))
    torch.testing.assert_close(mean, expected.mean(0))
    torch.testing.assert_close(std, expected.std(0))
    everything = torch.from_numpy(np.stack(all_codes).astype(np.float32))
    assert not torch.allclose(mean, everything.mean(0))


def test_discriminator_sees_flipped_samples_mirrored_back(tmp_path):
    """D's target is V of the unflipped image: a flipped sample reaches D unflipped."""
    cfg = tiny_config(tmp_path)
    fake_data(tmp_path)
    loop.seed_everything(0, CPU)
    trainer = loop.Trainer(cfg, CPU)
    sketch, color, reference, style, _ = trainer.to_device(fixed_batch(cfg))
    flipped = torch.tensor([True, False, True, False])
    seen = []
    real_forward = trainer.d_model.forward
    trainer.d_model.forward = lambda img: seen.append(img.detach().clone()) or real_forward(img)
    trainer.step(sketch, color, reference, style, flipped)
    real = seen[0][: len(color)]
    torch.testing.assert_close(real[0], color[0].flip(-1))
    torch.testing.assert_close(real[1], color[1])
    torch.testing.assert_close(real[2], color[2].flip(-1))


def test_lr_decay_is_constant_then_falls_linearly_to_the_last_step(tmp_path):
    from pipeline.train.schedule import lr_scale

    t = tiny_config(tmp_path, train={"max_steps": 10, "lr_decay": 0.4}).train
    assert [lr_scale(t, s) for s in range(10)] == pytest.approx(
        [1, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25])
    constant = tiny_config(tmp_path, train={"max_steps": 10, "lr_decay": 0.0}).train
    assert {lr_scale(constant, s) for s in range(10)} == {1.0}
