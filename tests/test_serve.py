"""`s2p serve` through HTTP on a real (threaded) uvicorn server: endpoints, bad
inputs (each a 4xx with one line, the server keeps serving), colour modes,
limits, the one-model queue under 8 concurrent requests, and the CLI's start-up."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import export_tiny_generator
from pipeline.cli import main
from pipeline.serve.server import Limits, is_loopback, running

RES = 32
SKETCH_HW = (53, 37)  # no multiple of the U-net's 4; long side 53 -> 32 gives 32x22
UPLOAD_LIMIT = 2 * 2**20


def png_bytes(pixels: np.ndarray | Image.Image, **save) -> bytes:
    img = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buf = io.BytesIO()
    img.save(buf, save.pop("format", "PNG"), **save)
    return buf.getvalue()


def sketch_pixels() -> np.ndarray:
    sketch = np.full(SKETCH_HW, 255, np.uint8)
    sketch[10:12, :] = 0
    sketch[:, 20:22] = 0
    return sketch


def declared_png(width: int, height: int) -> bytes:
    """A PNG header declaring width x height, with a few bytes of pixel data: a
    decompression bomb's shape, cheap to make."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A tiny generator export, a gallery folder (one unreadable file in it), and
    the app serving them on a loopback port."""
    from pipeline.colorize import Colorizer
    from pipeline.serve.app import create_app

    root = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch-home"))  # empty hub: random encoder, as recorded
        checkpoint = export_tiny_generator(root, RES)
        gallery = root / "gallery"
        gallery.mkdir()
        for name in ("red.png", "blue.jpg"):
            colour = [220, 40, 40] if name == "red.png" else [40, 60, 220]
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (48, 64, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(gallery / name)
        (gallery / "broken.png").write_bytes(b"not a png")
        colorizer = Colorizer.from_checkpoint(checkpoint, "cpu", extract=True)
        app = create_app(colorizer, checkpoint, gallery, Limits(max_upload_bytes=UPLOAD_LIMIT))
        files = {"sketch": png_bytes(sketch_pixels()),
                 "reference": png_bytes(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8),
                                        format="JPEG")}
        with running(app) as url:
            yield {"url": url, "app": app, "root": root, "checkpoint": checkpoint, "files": files}


@pytest.fixture
def client(site):
    with httpx.Client(base_url=site["url"], timeout=120) as c:
        yield c


def paint(client, sketch: bytes, references=(), gallery=(), **fields):
    files = [("sketch", ("sketch.png", sketch))]
    files += [("references", (f"ref{i}.jpg", data)) for i, data in enumerate(references)]
    data = {"gallery": list(gallery), **{k: str(v) for k, v in fields.items()}}
    return client.post("/api/paint", files=files, data=data)


def decoded(data_url: str) -> Image.Image:
    import base64

    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def assert_one_line_error(response, status: int, *needles: str):
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message and "Traceback" not in message
    for needle in needles:
        assert needle in message, message


# ---------------------------------------------------------------- the page and info


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(assets) == ["/static/app.js", "/static/style.css"]
    for asset in assets:
        body = client.get(asset)
        assert body.status_code == 200
        # Nothing fetched from elsewhere: no absolute URLs, no @import, no web fonts.
        assert not re.search(r"https?://|//cdn|@import|@font-face|url\(", body.text), asset


def test_info_reports_checkpoint_encoder_extractor_and_gallery(client, site):
    info = client.get("/api/info").json()
    assert info["checkpoint"] == str(site["checkpoint"])
    assert info["resolution"] == RES
    assert info["style_encoder"] == {"trained_with": "random", "in_use": "random",
                                     "random_fallback": True,
                                     "settings": {"code": "fc1", "precision": "fp32",
                                                  "weights": None, "input_size": RES, "seed": 0}}
    assert info["extractor"]["in_use"] == "classical"
    assert info["gallery"] == ["blue.jpg", "red.png"]  # broken.png left out
    assert info["sizes"][0]["value"] == RES and info["sizes"][-1]["value"] == 0
    assert info["limits"]["max_upload_bytes"] == UPLOAD_LIMIT
    thumb = client.get("/api/gallery/red.png")
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (64, 48)
    assert_one_line_error(client.get("/api/gallery/broken.png"), 404, "broken.png")


# ---------------------------------------------------------------- painting


def test_paint_default_size_is_trained_resolution(client, site):
    r = paint(client, site["files"]["sketch"], [site["files"]["reference"]])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["size"] == RES and body["note"] is None
    (result,) = body["results"]
    image = decoded(result["png"])
    assert image.size == (22, 32) == (result["width"], result["height"]) and image.mode == "RGB"
    assert np.asarray(image).std() > 0
    assert decoded(body["sketch"]["png"]).size == (22, 32)


@pytest.mark.parametrize("size,expected", [(64, (45, 64)), (0, (37, 53))])
def test_paint_sizes(client, site, size, expected):
    r = paint(client, site["files"]["sketch"], gallery=["red.png"], size=size)
    assert r.status_code == 200, r.text
    assert decoded(r.json()["results"][0]["png"]).size == expected


def test_swap_paints_one_sketch_with_several_references(client, site):
    r = paint(client, site["files"]["sketch"], [site["files"]["reference"]],
              gallery=["red.png", "blue.jpg"])
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["reference"] for x in results] == ["ref0.jpg", "red.png", "blue.jpg"]
    pixels = [np.asarray(decoded(x["png"]), np.int16) for x in results]
    assert all(p.shape == (32, 22, 3) for p in pixels)
    # Different references give different style codes, hence different paintings.
    assert np.abs(pixels[1] - pixels[2]).max() > 0


def test_same_request_same_painting(client, site):
    """The gallery's cached code and a fresh upload of the same picture agree."""
    red = (site["root"] / "gallery" / "red.png").read_bytes()
    a = paint(client, site["files"]["sketch"], gallery=["red.png"]).json()["results"][0]["png"]
    b = paint(client, site["files"]["sketch"], [red]).json()["results"][0]["png"]
    assert a == b


def test_extract_line_art_from_a_colour_picture(client):
    from pipeline import toon

    colour = png_bytes(toon.generate(5, 48).image)
    plain = paint(client, colour, gallery=["red.png"]).json()
    assert "looks like a colour picture" in plain["note"]
    r = paint(client, colour, gallery=["red.png"], extract="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["note"] is None and body["sketch"]["extracted"] is True
    line = np.asarray(decoded(body["sketch"]["png"]))
    assert line.ndim == 2 and line.shape == (32, 32)
    assert decoded(body["results"][0]["png"]).size == (32, 32)


@pytest.mark.parametrize("mode", ["L", "CMYK", "I;16", "RGBA", "P"])
def test_colour_modes_are_converted(client, site, mode):
    rgb = np.stack([sketch_pixels()] * 3, axis=-1)
    if mode == "I;16":
        img = Image.fromarray(sketch_pixels().astype(np.uint16) * 257)  # 16-bit grey
        assert img.mode.startswith("I")
    elif mode == "RGBA":
        img = Image.fromarray(np.dstack([rgb, np.full(SKETCH_HW, 128, np.uint8)]), "RGBA")
    else:
        img = Image.fromarray(rgb).convert(mode)
    data = png_bytes(img, format="JPEG" if mode == "CMYK" else "PNG")
    r = paint(client, data, gallery=["blue.jpg"])
    assert r.status_code == 200, r.text
    assert decoded(r.json()["results"][0]["png"]).size == (22, 32)
    r = paint(client, site["files"]["sketch"], [data])  # the same file as a reference
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("case,status,needle", [
    ("not_an_image", 400, "cannot decode"),
    ("zero_byte", 400, "empty file"),
    ("truncated", 400, "cannot decode"),
    ("bomb", 400, "exceeds --max-pixels=50000000"),
    ("pil_bomb", 400, "declared size 30000x30000 exceeds --max-pixels"),
])
def test_bad_sketch_files(client, site, case, status, needle):
    good = site["files"]["sketch"]
    data = {"not_an_image": b"<html>hello</html>", "zero_byte": b"",
            "truncated": png_bytes(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))[:900],
            "bomb": declared_png(8000, 8000),  # 64 MP: over the server's limit, under PIL's
            "pil_bomb": declared_png(30000, 30000)}[case]
    assert_one_line_error(paint(client, data, gallery=["red.png"]), status, "sketch sketch.png", needle)
    assert_one_line_error(paint(client, good, [data]), status, "reference ref0.jpg", needle)
    assert paint(client, good, gallery=["red.png"]).status_code == 200  # still serving


def test_bad_fields(client, site):
    good = site["files"]["sketch"]
    assert_one_line_error(client.post("/api/paint", data={"gallery": ["red.png"]}), 422,
                          "no 'sketch' field")
    assert_one_line_error(paint(client, good), 422, "no reference")
    assert_one_line_error(paint(client, good, gallery=["nope.png"]), 400, "no image named 'nope.png'")
    assert_one_line_error(paint(client, good, gallery=["red.png"] * 9), 400, "at most 8")
    assert_one_line_error(paint(client, good, gallery=["red.png"], size="big"), 422, "size")
    assert_one_line_error(paint(client, good, gallery=["red.png"], size=4), 422, "16..2048")
    assert_one_line_error(paint(client, good, gallery=["red.png"], size=4096), 422, "16..2048")
    assert_one_line_error(client.get("/api/nothing"), 404, "Not Found")


def test_native_size_over_the_painting_limit(client):
    wide = png_bytes(np.full((20, 2100), 255, np.uint8))
    assert_one_line_error(paint(client, wide, gallery=["red.png"], size=0), 400,
                          "2100-px painting exceeds", "2048")


def test_huge_upload_is_refused(client, site):
    big = b"\0" * (UPLOAD_LIMIT + 1)
    assert_one_line_error(paint(client, big, gallery=["red.png"]), 413, "2 MiB", "--max-upload-mb")

    def streamed():  # no Content-Length: the limit is counted as the body arrives
        boundary = b"--s2p\r\n"
        yield boundary + b'Content-Disposition: form-data; name="sketch"; filename="a.png"\r\n\r\n'
        for _ in range(UPLOAD_LIMIT // 65536 + 2):
            yield b"\0" * 65536
        yield b"\r\n--s2p--\r\n"

    r = client.post("/api/paint", content=streamed(),
                    headers={"content-type": "multipart/form-data; boundary=s2p"})
    assert_one_line_error(r, 413, "upload too large")
    assert paint(client, site["files"]["sketch"], gallery=["red.png"]).status_code == 200


def test_a_bug_is_500_with_one_line_and_the_server_lives(client, site, monkeypatch):
    colorizer = site["app"].state.painter.colorizer

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(colorizer, "colorize", broken)
    assert_one_line_error(paint(client, site["files"]["sketch"], gallery=["red.png"]), 500,
                          "internal error (RuntimeError)")
    monkeypatch.undo()
    assert paint(client, site["files"]["sketch"], gallery=["red.png"]).status_code == 200


# ---------------------------------------------------------------- one model, a queue


def test_eight_concurrent_requests_are_painted_one_at_a_time(client, site, monkeypatch):
    colorizer = site["app"].state.painter.colorizer
    original = colorizer.colorize
    active, peak, lock = [0], [0], threading.Lock()

    def tracked(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(colorizer, "colorize", tracked)
    sizes = [64, 128, 0, RES] * 2
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(
            lambda s: paint(client, site["files"]["sketch"], [site["files"]["reference"]],
                            gallery=["red.png"], size=s), sizes))
    assert [r.status_code for r in responses] == [200] * 8
    assert peak[0] == 1  # never two paintings at once: one model's memory
    for r, size in zip(responses, sizes):
        assert r.json()["size"] == (size or 53) and len(r.json()["results"]) == 2
    assert site["app"].state.painter.held == 0


def test_full_queue_is_503(site, monkeypatch):
    from pipeline.serve.app import create_app

    painter = site["app"].state.painter
    release = threading.Event()
    original = painter.colorizer.colorize

    def slow(*args, **kwargs):
        release.wait(60)
        return original(*args, **kwargs)

    monkeypatch.setattr(painter.colorizer, "colorize", slow)
    app = create_app(painter.colorizer, site["checkpoint"], limits=Limits(max_queue=2))
    with running(app) as url, httpx.Client(base_url=url, timeout=120) as c, ThreadPoolExecutor(4) as pool:
        first = [pool.submit(paint, c, site["files"]["sketch"], [site["files"]["reference"]])
                 for _ in range(2)]
        for _ in range(1000):  # wait until both are held (one painting, one waiting)
            if app.state.painter.held == 2:
                break
            release.wait(0.01)
        busy = [paint(c, site["files"]["sketch"], [site["files"]["reference"]]) for _ in range(2)]
        release.set()
        for r in busy:
            assert_one_line_error(r, 503, "busy")
        assert [f.result().status_code for f in first] == [200, 200]


# ---------------------------------------------------------------- the command


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def serve(*args) -> int:
    return main(["serve", "--port", "0", *map(str, args)])


def test_incompatible_checkpoints_are_refused_at_start(site, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(site["root"] / "torch-home"))
    models = tmp_path / "models"
    shutil.copytree(site["checkpoint"].parent, models)
    meta = json.loads((models / "generator.json").read_text())
    meta["style_encoder"] = "imagenet"  # but only the random fallback encoder is here
    (models / "generator.json").write_text(json.dumps(meta))
    assert serve("-c", models / "generator.pt") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "trained with imagenet style codes" in err[-1]
    meta["style_encoder"], meta["model"]["base_width"] = "random", 16  # the tensors hold 8
    (models / "generator.json").write_text(json.dumps(meta))
    assert serve("-c", models / "generator.pt") == 2
    assert "incompatible" in capsys.readouterr().err.strip().splitlines()[-1]
    assert serve("-c", tmp_path / "nowhere.pt") == 2
    assert "not found" in capsys.readouterr().err


def test_start_up_errors_are_one_line(site, tmp_path, capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "-c", str(site["checkpoint"])]) == 2
        assert capsys.readouterr().err.strip() == f"error: 127.0.0.1:{port}: cannot listen (Address already in use)"
    finally:
        taken.close()
    assert serve("-c", site["checkpoint"], "--references", tmp_path / "none") == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none'}: no such folder (--references)"
    assert serve("-c", site["checkpoint"], "--max-side", 0) == 2
    assert capsys.readouterr().err.strip() == "error: --max-side 0: must be > 0"
    # Any address but loopback is said out loud (here it then stops on the missing checkpoint).
    assert serve("--host", "0.0.0.0", "-c", tmp_path / "nowhere.pt") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("warning: --host 0.0.0.0 is not a loopback address")
    assert "not found" in err[1] and len(err) == 2


def test_console_script_serves_and_stops_on_ctrl_c(site):
    exe = Path(shutil.which("s2p") or Path(__file__).resolve().parents[1] / ".venv/bin/s2p")
    if not exe.exists():
        pytest.skip("the s2p console script is not installed (pip install -e .)")
    env = {**os.environ, "TORCH_HOME": str(site["root"] / "torch-home")}
    proc = subprocess.Popen([str(exe), "serve", "--port", "0", "-c", str(site["checkpoint"]),
                             "--references", str(site["root"] / "gallery"), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.match(r"s2p serve: (http://127\.0\.0\.1:\d+/) paints with .* \(style encoder random\)", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        info = httpx.get(match.group(1) + "api/info", timeout=30).json()
        assert info["gallery"] == ["blue.jpg", "red.png"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read().strip() == "s2p serve: stopped"
        err = proc.stderr.read()
        assert "broken.png: left out of the reference gallery" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
