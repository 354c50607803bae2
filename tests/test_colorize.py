"""`s2p colorize`: odd sizes, PNG/JPEG, batch folders, --extract, and one-line errors."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config, tiny_generator
from pipeline.cli import main
from pipeline.colorize import pad_to_multiple

RES = 32  # tiny_config's data.resolution; model depth 2 -> multiples of 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny randomly initialised generator export plus sketch/reference images."""
    from pipeline.models import save_generator

    root = tmp_path_factory.mktemp("colorize")
    with pytest.MonkeyPatch.context() as mp:
        # An empty torch hub: the style encoder is the seeded random fallback, as recorded.
        mp.setenv("TORCH_HOME", str(root / "torch-home"))
        cfg = tiny_config()
        G = tiny_generator(cfg.model)
        extra = {"resolution": RES, "style_encoder": "random",
                 "featurize": {"code": "fc1", "precision": "fp32", "weights": None,
                               "input_size": RES, "seed": 0}}
        save_generator(G, cfg.model, root / "models" / "generator.pt", extra)
        rng = np.random.default_rng(0)
        sketch = np.full((53, 37), 255, np.uint8)  # H=53, W=37: no multiple of 4
        sketch[10:12, :] = 0
        sketch[:, 20:22] = 0
        Image.fromarray(sketch).save(root / "sketch.png")
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(root / "ref.jpg")
        yield root


def run(*args) -> int:
    return main(["colorize", *map(str, args)])


def test_pad_to_multiple_pads_white_bottom_right():
    img = np.zeros((53, 37), np.uint8)
    padded = pad_to_multiple(img, 8)
    assert padded.shape == (56, 40)
    assert (padded[:53, :37] == 0).all() and (padded[53:] == 255).all() and (padded[:, 37:] == 255).all()
    rgb = np.zeros((16, 8, 3), np.uint8)
    assert pad_to_multiple(rgb, 8) is rgb


@pytest.mark.parametrize("size,suffix", [(None, ".png"), (0, ".jpg")])
def test_odd_size_roundtrip(workdir, size, suffix, capsys):
    out = workdir / f"out-{size}{suffix}"
    extra = [] if size is None else ["--size", size]
    code = run(workdir / "sketch.png", "--reference", workdir / "ref.jpg", "--checkpoint",
               workdir / "models" / "generator.pt", "-o", out, "--device", "cpu", *extra)
    assert code == 0, capsys.readouterr().err
    with Image.open(out) as img:
        assert img.size == (37, 53) and img.mode == "RGB"
        assert img.format == ("PNG" if suffix == ".png" else "JPEG")
        pixels = np.asarray(img)
    assert pixels.std() > 0  # a random generator still paints something non-constant


def test_batch_folder_skips_bad_files(workdir, capsys):
    src = workdir / "batch"
    src.mkdir()
    shutil.copy(workdir / "sketch.png", src / "a.png")
    Image.open(workdir / "sketch.png").convert("RGB").save(src / "b.jpg")
    (src / "c.png").write_text("not an image")
    (src / "notes.txt").write_text("ignored")
    out = workdir / "batch-out"
    code = run(src, "-r", workdir / "ref.jpg", "-c", workdir / "models", "-o", out, "--device", "cpu")
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert "c.png" in err and "cannot decode" in err


def test_extract_from_colour_input(workdir, capsys):
    from pipeline import toon

    Image.fromarray(toon.generate(5, 48).image).save(workdir / "colour.png")
    out = workdir / "extracted.png"
    code = run(workdir / "colour.png", "-r", workdir / "ref.jpg", "-c",
               workdir / "models" / "generator.pt", "-o", out, "--extract", "--device", "cpu")
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (48, 48)


@pytest.mark.parametrize("case", ["missing", "zero_byte", "text_as_png", "bad_reference"])
def test_bad_inputs_are_one_line_errors(workdir, case, capsys):
    bad = workdir / f"{case}.png"
    if case == "zero_byte":
        bad.write_bytes(b"")
    elif case == "text_as_png":
        bad.write_text("hello, I am not a PNG\n")
    sketch, ref = (workdir / "sketch.png", bad) if case == "bad_reference" else (bad, workdir / "ref.jpg")
    if case == "bad_reference":
        bad.write_text("<html>")
    code = run(sketch, "-r", ref, "-c", workdir / "models" / "generator.pt", "-o", workdir / "x.png")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("error: ") and bad.name in err
    expected = {"missing": "no such", "zero_byte": "empty file", "text_as_png": "cannot decode",
                "bad_reference": "cannot decode"}[case]
    assert expected in err


def test_bad_output_suffix_fails_before_model_load(workdir, capsys):
    code = run(workdir / "sketch.png", "-r", workdir / "ref.jpg", "-c", workdir / "nowhere.pt",
               "-o", workdir / "out.gif")
    assert code == 2 and "out.gif: output must end in .png, .jpg or .jpeg" in capsys.readouterr().err


def test_incompatible_checkpoint(workdir, capsys):
    ck = workdir / "incompatible"
    shutil.copytree(workdir / "models", ck)
    meta = json.loads((ck / "generator.json").read_text())
    meta["model"]["base_width"] = 16  # the tensors were saved with 8
    (ck / "generator.json").write_text(json.dumps(meta))
    code = run(workdir / "sketch.png", "-r", workdir / "ref.jpg", "-c", ck / "generator.pt",
               "-o", workdir / "x.png", "--device", "cpu")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "incompatible" in err and err.count("\n") == 0
    code = run(workdir / "sketch.png", "-r", workdir / "ref.jpg", "-c", workdir / "nowhere.pt",
               "-o", workdir / "x.png")
    assert code == 2 and "not found" in capsys.readouterr().err
    # Trained on ImageNet style codes, but only the random fallback encoder is here.
    meta["model"]["base_width"] = 8
    meta["style_encoder"] = "imagenet"
    (ck / "generator.json").write_text(json.dumps(meta))
    code = run(workdir / "sketch.png", "-r", workdir / "ref.jpg", "-c", ck / "generator.pt",
               "-o", workdir / "x.png", "--device", "cpu")
    err = capsys.readouterr().err
    assert code == 2 and "trained with imagenet style codes" in err


def test_console_script_exit_status(workdir):
    exe = Path(shutil.which("s2p") or Path(__file__).resolve().parents[1] / ".venv/bin/s2p")
    if not exe.exists():
        pytest.skip("the s2p console script is not installed (pip install -e .)")
    proc = subprocess.run([str(exe), "colorize", str(workdir / "nope.png"), "-r",
                           str(workdir / "ref.jpg"), "-o", str(workdir / "y.png")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {workdir / 'nope.png'}: no such input file or folder"]
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "colorize" in proc.stdout


def test_working_size_is_capped_before_model_load(workdir, capsys):
    code = run(workdir / "sketch.png", "-r", workdir / "ref.jpg", "-c", workdir / "nowhere.pt",
               "-o", workdir / "x.png", "--size", 20000)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("error: --size 20000: the working size is at most 4096 pixels")


def test_native_size_above_the_cap_is_refused(workdir, capsys):
    wide = workdir / "wide.png"
    Image.fromarray(np.full((8, 4100), 255, np.uint8)).save(wide)
    code = run(wide, "-r", workdir / "ref.jpg", "-c", workdir / "models" / "generator.pt",
               "-o", workdir / "x.png", "--size", 0, "--device", "cpu")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert f"{wide}: the input's long side 4100: the working size is at most 4096" in err


def test_out_of_memory_is_one_line(workdir, capsys, monkeypatch):
    from pipeline.models.generator import Generator

    def no_memory(self, *args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 68719476736 bytes.")

    monkeypatch.setattr(Generator, "forward", no_memory)
    code = run(workdir / "sketch.png", "-r", workdir / "ref.jpg", "-c",
               workdir / "models" / "generator.pt", "-o", workdir / "x.png", "--device", "cpu")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err == (f"error: {workdir / 'sketch.png'}: out of memory painting 1 picture(s) of "
                   "22x32 on cpu: try a smaller --size")


def test_malicious_checkpoint_is_refused_in_one_complete_line(workdir, tmp_path, capsys):
    import os

    import torch

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    ck = tmp_path / "models"
    shutil.copytree(workdir / "models", ck)
    torch.save({"weight": Exploit()}, ck / "generator.pt")
    code = run(workdir / "sketch.png", "-r", workdir / "ref.jpg", "-c", ck / "generator.pt",
               "-o", tmp_path / "x.png", "--device", "cpu")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err == (f"error: {ck / 'generator.pt'}: refused: loading it would run Python code "
                   "(posix.system), so it was not loaded; it may be malicious")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "x.png").exists()
