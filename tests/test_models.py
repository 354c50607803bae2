"""Generator / discriminator shapes, the lazy-middle gradient check, export round trip."""
from __future__ import annotations

import json

import pytest
import torch

from pipeline.losses import greyscale
from pipeline.models import (
    CheckpointError,
    build_discriminator,
    build_generator,
    load_generator,
    save_generator,
)
from tests.conftest import tiny_config


def _model_cfg(**kw):
    return tiny_config(model=kw).model if kw else tiny_config().model


def _inputs(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    sketch = torch.rand(b, 1, h, w, generator=g) * 2 - 1
    style = torch.rand(b, 4096, generator=g) * 3
    return sketch, style


@pytest.mark.parametrize("depth,size", [(2, (16, 16)), (2, (32, 48)), (2, (64, 28)), (3, (24, 40))])
def test_generator_shapes_train_and_eval(depth, size):
    torch.manual_seed(0)
    G = build_generator(_model_cfg(depth=depth))
    sketch, style = _inputs(2, *size)
    G.train()
    out, grey, colour = G(sketch, style)
    assert out.shape == (2, 3, *size)
    assert grey.shape == (2, 1, *size)
    assert colour.shape == (2, 3, *size)
    for t in (out, grey, colour):
        assert t.abs().max() <= 1.0
    G.eval()
    with torch.no_grad():
        only = G(sketch, style)
    assert isinstance(only, torch.Tensor) and only.shape == (2, 3, *size)


def test_generator_rejects_sizes_not_multiple_of_depth():
    G = build_generator(_model_cfg(depth=2))
    with pytest.raises(ValueError, match="multiple of 2\\*\\*model.depth=4"):
        G(*_inputs(1, 18, 16))


@pytest.mark.parametrize("norm", ["group", "batch", "none"])
def test_norm_kinds_build_and_run(norm):
    cfg = _model_cfg(norm=norm)
    G, D = build_generator(cfg), build_discriminator(cfg)
    out, _, _ = G(*_inputs(2, 16, 16))
    assert D(out).shape == (2, 4096)


def test_style_code_changes_the_output():
    torch.manual_seed(0)
    G = build_generator(_model_cfg()).eval()
    sketch, style = _inputs(1, 16, 16)
    with torch.no_grad():
        a, b = G(sketch, style), G(sketch, style * 0)
    assert (a - b).abs().max() > 1e-4


def _grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_guide_losses_alone_reach_the_middle_and_the_fusion():
    """The lazy-middle check: with no main loss at all, the guide decoders'
    losses must put gradient on the fusion layer and every middle block."""
    torch.manual_seed(0)
    G = build_generator(_model_cfg()).train()
    sketch, style = _inputs(2, 16, 16)
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    _, grey, colour = G(sketch, style)
    loss = (grey - greyscale(target)).abs().mean() + (colour - target).abs().mean()
    loss.backward()
    assert _grad_norm(G.fusion.project) > 0
    assert _grad_norm(G.fusion.fuse) > 0
    for block in G.middle:
        for name, p in block.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert _grad_norm(G.encoder[-1]) > 0
    # The main decoder is not on the guides' path: its gradient must come from the main loss.
    assert _grad_norm(G.decoder) == 0 and _grad_norm(G.to_rgb) == 0


def test_guide_grey_sits_before_the_fusion():
    torch.manual_seed(0)
    G = build_generator(_model_cfg()).train()
    _, grey, _ = G(*_inputs(2, 16, 16))
    grey.abs().mean().backward()
    assert _grad_norm(G.fusion) == 0 and _grad_norm(G.middle) == 0
    assert _grad_norm(G.encoder[-1]) > 0


def test_discriminator_output_shape_any_size():
    D = build_discriminator(_model_cfg())
    for h, w in [(32, 32), (48, 64)]:
        assert D(torch.rand(3, 3, h, w) * 2 - 1).shape == (3, 4096)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = _model_cfg()
    G = build_generator(cfg)
    path = save_generator(G, cfg, tmp_path / "models" / "generator.pt", {"resolution": 32})
    state = torch.load(path, weights_only=True)
    assert set(state) == set(G.state_dict())
    G2, meta = load_generator(path, map_location="cpu")
    assert not G2.training
    assert meta["resolution"] == 32 and meta["model"] == cfg.model_dump()
    G.eval()
    sketch, style = _inputs(2, 16, 16)
    with torch.no_grad():
        assert torch.equal(G(sketch, style), G2(sketch, style))
    # A folder works as well as the .pt path.
    assert load_generator(tmp_path / "models")[1]["resolution"] == 32


def test_incompatible_checkpoint_is_a_clear_error(tmp_path):
    cfg = _model_cfg()
    path = save_generator(build_generator(cfg), cfg, tmp_path / "generator.pt", {})
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["model"]["base_width"] = 16
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"generator\.pt: incompatible.*shape mismatch"):
        load_generator(path)
    meta["model"]["depth"] = 99
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"generator\.json: model\.depth"):
        load_generator(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(path)
