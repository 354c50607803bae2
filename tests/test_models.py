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


@pytest.mark.parametrize("inject", ["concat", "film", "both"])
def test_style_code_changes_the_output_after_training(inject):
    """FiLM starts as the identity (the plain U-net); a few steps on a target that
    depends on the code must make the output depend on it, whichever way it enters."""
    torch.manual_seed(0)
    G = build_generator(_model_cfg(style_inject=inject)).train()
    sketch, style = _inputs(4, 16, 16)
    style[2:] *= -1
    target = torch.cat([torch.full((2, 3, 16, 16), 0.8), torch.full((2, 3, 16, 16), -0.8)])
    opt = torch.optim.Adam(G.parameters(), lr=3e-3)
    for _ in range(30):
        out, _, _ = G(sketch, style)
        loss = (out - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    G.eval()
    with torch.no_grad():
        out = G(sketch, style)
    assert out[:2].mean() - out[2:].mean() > 0.5


def test_film_starts_as_the_identity():
    torch.manual_seed(0)
    G = build_generator(_model_cfg(style_inject="film")).eval()
    sketch, style = _inputs(1, 16, 16)
    with torch.no_grad():
        assert torch.equal(G(sketch, style), G(sketch, style * 0))


def test_style_standardisation_floors_and_clips():
    """A dimension constant in training must not dominate at inference."""
    G = build_generator(_model_cfg())
    dim = G.cfg.style_dim
    std = torch.ones(dim)
    std[0] = 0.0  # never varied in training
    G.set_style_stats(torch.zeros(dim), std)
    assert G.style.style_std[0] == pytest.approx(G.cfg.style_std_floor)
    code = torch.zeros(1, dim)
    code[0, 0] = 1e6
    with torch.no_grad():
        z = (code - G.style.style_mean) / G.style.style_std
        assert z.abs().max() > G.cfg.style_clip
        # What reaches the dense layer is clipped.
        lin = G.style.dense[0]
        expected = lin(z.clamp(-G.cfg.style_clip, G.cfg.style_clip))
        assert torch.allclose(G.style.dense[0](z.clamp(-8, 8)), expected)
        assert torch.allclose(G.style(code), G.style.dense[1](expected))


def test_style_is_standardised_in_fp32_under_autocast():
    G = build_generator(_model_cfg())
    dim = G.cfg.style_dim
    G.set_style_stats(torch.full((dim,), 1000.0), torch.full((dim,), 1e-3))
    code = torch.full((1, dim), 1000.0 + 1e-3)  # z = 1 exactly, lost if cast to bf16 first
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = G.style(code)
    with torch.no_grad():
        expected = G.style.dense(torch.ones(1, dim))
    torch.testing.assert_close(s.float(), expected, rtol=2e-2, atol=2e-2)


def _grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("inject", ["concat", "film"])
def test_guide_losses_alone_reach_the_middle_and_the_style_path(inject):
    """The lazy-middle check: with no main loss at all, the guide decoders'
    losses must put gradient on the style path and every middle block."""
    torch.manual_seed(0)
    G = build_generator(_model_cfg(style_inject=inject)).train()
    sketch, style = _inputs(2, 16, 16)
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    _, grey, colour = G(sketch, style)
    loss = (grey - greyscale(target)).abs().mean() + (colour - target).abs().mean()
    loss.backward()
    if inject == "concat":
        assert _grad_norm(G.style.dense) > 0 and _grad_norm(G.concat) > 0
    else:  # FiLM starts at zero: its own weights get gradient first
        assert all(_grad_norm(block.norm1.film) > 0 for block in G.middle)
    for block in G.middle:
        for name, p in block.named_parameters():
            if p.requires_grad and not name.endswith("film.weight"):
                assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert _grad_norm(G.encoder[-1]) > 0
    # The main decoder is not on the guides' path: its gradient must come from the main loss.
    assert _grad_norm(G.decoder) == 0 and _grad_norm(G.to_rgb) == 0


def test_guide_grey_sits_before_the_style():
    torch.manual_seed(0)
    G = build_generator(_model_cfg()).train()
    _, grey, _ = G(*_inputs(2, 16, 16))
    grey.abs().mean().backward()
    assert _grad_norm(G.style) == 0 and _grad_norm(G.middle) == 0
    assert _grad_norm(G.encoder[-1]) > 0


def test_explicit_widths_build_the_paper_figure():
    """Fig. 2's sizes at a tenth of the input: encoder 16..256, middle 2048, decoder 512..16."""
    cfg = _model_cfg(depth=5, encoder_widths=[16, 32, 64, 128, 256], middle_width=2048,
                     decoder_widths=[512, 256, 128, 64, 16], middle_blocks=1, style_proj=2048,
                     style_inject="concat")
    from pipeline.models.generator import decoder_widths, encoder_widths

    assert encoder_widths(cfg) == [16, 32, 64, 128, 256, 2048]
    assert decoder_widths(cfg) == [512, 256, 128, 64, 16]
    with torch.device("meta"):
        G = build_generator(cfg).train()
        out, grey, colour = G(torch.empty(1, 1, 64, 64), torch.empty(1, cfg.style_dim))
    assert out.shape == (1, 3, 64, 64) and grey.shape == (1, 1, 64, 64)
    assert G.middle[0].conv1.weight.shape[:2] == (2048, 2048)
    assert G.style.dense[0].weight.shape == (2048, cfg.style_dim)


def test_widths_must_match_depth():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="encoder_widths must list 3 positive widths"):
        tiny_config(model={"depth": 3, "encoder_widths": [8, 16]})


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
