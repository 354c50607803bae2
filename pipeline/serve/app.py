"""The `s2p serve` web app: FastAPI endpoints around one `Colorizer`.

    GET  /                  the page (static/index.html; its script and style sheet
                            are under /static: nothing comes from a CDN)
    GET  /api/info          checkpoint, extractor, style encoder (from generator.json
                            and what is loaded here), limits, sizes, gallery names
    GET  /api/gallery/NAME  a reference gallery thumbnail (PNG)
    POST /api/paint         multipart: sketch (file), references (files) and/or
                            gallery (names), extract (bool), size (px, 0 = the
                            sketch's own size; default the trained resolution)
                            -> JSON {sketch, results: [{reference, png, ...}], ...}
                            One reference is a painting; several are the swap view
                            (one sketch, many styles).

Memory. One model is in memory. Paintings run on a single worker thread in
arrival order; at most `Limits.max_queue` requests are accepted at once (one
painting, the rest waiting), more get 503. Uploads are decoded inside the
worker, so a waiting request holds only its encoded bytes, which the body limit
bounds: eight concurrent clients cost one painting's memory, not eight.

Errors are JSON {"error": "one line"} that the page shows as they are:
    400  a file that does not decode (empty, truncated, not an image), a declared
         size over the pixel limit (checked before any pixel is decoded), a size
         over the painting limit, an unknown gallery name
    413  a request body over the upload limit (Content-Length, or counted while
         it streams in)
    422  a missing or malformed form field
    503  the queue is full
    500  a bug: logged with its traceback on the server; the page gets one line
         and the server keeps serving.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as AnyHTTPException

from pipeline.colorize import ColorizeError, looks_coloured, to_grey
from pipeline.images import Rejected, decode_rgb, encode_image, resize_long_side
from pipeline.serve.server import Limits

log = logging.getLogger("s2p.serve")

STATIC = Path(__file__).with_name("static")
THUMBNAIL_SIDE = 160
OFFERED_SIZES = (256, 512, 1024)  # besides the trained resolution and the sketch's own size


@dataclass
class Upload:
    name: str
    data: bytes


@dataclass
class GalleryImage:
    prepared: np.ndarray  # the reference as the style encoder reads it
    thumbnail: bytes  # PNG, long side THUMBNAIL_SIDE at most


def load_gallery(folder: Path, colorizer, limits: Limits) -> dict[str, GalleryImage]:
    """Every readable image in `folder`, by file name; unreadable ones are skipped
    with a warning line; none readable is an error."""
    from pipeline.colorize import image_files

    if not folder.is_dir():
        raise ColorizeError(f"{folder}: no such folder (--references)")
    gallery = {}
    for path in image_files(folder):
        try:
            rgb = decode_rgb(path.read_bytes(), limits.max_pixels, "--max-pixels")
        except (Rejected, OSError) as why:
            log.warning("%s: left out of the reference gallery (%s)", path, why)
            continue
        small = resize_long_side(rgb, THUMBNAIL_SIDE) if max(rgb.shape[:2]) > THUMBNAIL_SIDE else rgb
        gallery[path.name] = GalleryImage(colorizer.prepare_reference(rgb), encode_image(small))
    if not gallery:
        raise ColorizeError(f"{folder}: no readable PNG/JPEG images for the reference gallery")
    return gallery


def png_data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_image(pixels)).decode("ascii")


@dataclass
class Painter:
    """The one model, its worker thread and the count of requests it holds."""

    colorizer: object
    gallery: dict[str, GalleryImage]
    limits: Limits
    held: int = 0  # painting + waiting; touched only on the event loop's thread
    _worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2p-paint"))
    _gallery_codes: dict = field(default_factory=dict)  # name -> style code, filled on first use

    async def run(self, job, *args):
        """Queue `job(*args)` on the worker; 503 when `max_queue` requests are held."""
        if self.held >= self.limits.max_queue:
            raise HTTPException(503, f"busy: {self.held} requests are already queued; "
                                     "try again in a moment")
        self.held += 1
        try:
            return await asyncio.wrap_future(self._worker.submit(job, *args))
        finally:
            self.held -= 1

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    # -------------------------------------------------- on the worker thread

    def decode(self, upload: Upload, role: str) -> np.ndarray:
        try:
            return decode_rgb(upload.data, self.limits.max_pixels, "--max-pixels")
        except Rejected as why:
            raise HTTPException(400, f"{role} {upload.name}: {why}") from None

    def gallery_code(self, name: str) -> np.ndarray:
        if name not in self._gallery_codes:
            self._gallery_codes[name] = self.colorizer.style_codes([self.gallery[name].prepared])[0]
        return self._gallery_codes[name]

    def paint(self, sketch: Upload, references: list[Upload], gallery_names: list[str],
              extract: bool, size: int | None) -> dict:
        started = time.perf_counter()
        rgb = self.decode(sketch, "sketch")
        side = size if size else max(rgb.shape[:2])
        if side > self.limits.max_side:
            raise HTTPException(400, f"sketch {sketch.name}: a {side}-px painting exceeds the "
                                     f"server's limit of {self.limits.max_side} px; choose a smaller size")
        work = resize_long_side(rgb, side)
        note = None
        if extract:
            line = self.colorizer.extract(work)
        else:
            if looks_coloured(work):
                note = (f"{sketch.name} looks like a colour picture: tick 'extract its line art "
                        "first' to paint its line art instead of its grey values")
            line = to_grey(work)
        prepared = [self.colorizer.prepare_reference(self.decode(u, "reference")) for u in references]
        codes = list(self.colorizer.style_codes(prepared)) if prepared else []
        styles = [(u.name, code) for u, code in zip(references, codes)]
        styles += [(name, self.gallery_code(name)) for name in gallery_names]
        results = []
        for name, code in styles:
            painted = self.colorizer.colorize(line, None, size=0, style=code)
            results.append({"reference": name, "png": png_data_url(painted),
                            "width": painted.shape[1], "height": painted.shape[0]})
        return {"sketch": {"name": sketch.name, "png": png_data_url(line),
                           "width": line.shape[1], "height": line.shape[0], "extracted": extract},
                "results": results, "size": side, "note": note,
                "seconds": round(time.perf_counter() - started, 3)}


def describe(colorizer, checkpoint: Path, painter: Painter) -> dict:
    """What /api/info reports: what the checkpoint was trained with and what runs here."""
    meta = colorizer.meta
    encoder = colorizer.encoder.source
    extractor = getattr(colorizer.extractor, "method_used", None)
    resolution = colorizer.resolution
    sizes = [{"value": resolution, "label": f"{resolution} px (the trained resolution)"}] if resolution else []
    sizes += [{"value": s, "label": f"{s} px"} for s in OFFERED_SIZES
              if s != resolution and s <= painter.limits.max_side]
    sizes.append({"value": 0, "label": "the sketch's own size"})
    return {
        "checkpoint": str(checkpoint),
        "resolution": resolution,
        "model": meta.get("model"),
        "train": meta.get("train"),
        "extractor": {"trained_with": meta.get("extractor"), "in_use": extractor,
                      "settings": meta.get("extract")},
        "style_encoder": {"trained_with": meta.get("style_encoder"), "in_use": encoder,
                          "random_fallback": encoder == "random", "settings": meta.get("featurize")},
        "limits": asdict(painter.limits),
        "sizes": sizes,
        "gallery": sorted(painter.gallery),
    }


class BodyTooLarge(HTTPException):
    pass


class LimitBody:
    """ASGI middleware: 413 for a request body over `max_bytes`, by its declared
    Content-Length before reading, else counted as it streams in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def too_large(self) -> BodyTooLarge:
        return BodyTooLarge(413, f"upload too large: the limit is {self.max_bytes / 2**20:.0f} MiB "
                                 "per request (--max-upload-mb)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await error_response(self.too_large())(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self.too_large()  # FastAPI re-raises an HTTPException from body parsing
            return message

        await self.app(scope, counted, send)


class CatchBugs:
    """ASGI middleware: an unexpected exception becomes a one-line 500 (its traceback
    goes to the server's log). Handled here rather than by Starlette's last-resort
    handler, which re-raises and so drops the client's keep-alive connection."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        started = False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as err:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started or scope["type"] != "http":
                raise
            message = f"internal error ({type(err).__name__}); the server's log has the details"
            await JSONResponse({"error": message}, status_code=500)(scope, receive, send)


def error_response(err: AnyHTTPException) -> JSONResponse:
    return JSONResponse({"error": err.detail}, status_code=err.status_code)


def validation_message(err: RequestValidationError) -> str:
    first = err.errors()[0]
    name = str(first["loc"][-1]) if first.get("loc") else "request"
    if first.get("type") == "missing":
        return f"the form has no '{name}' field"
    return f"{name}: {first.get('msg', 'invalid value')}"


def create_app(colorizer, checkpoint: str | Path, references: str | Path | None = None,
               limits: Limits = Limits()) -> FastAPI:
    """The app for one loaded Colorizer (loaded with extract=True for the
    'extract line art first' option); `references` is the gallery folder."""
    gallery_images = load_gallery(Path(references), colorizer, limits) if references else {}
    painter = Painter(colorizer, gallery_images, limits)
    info = describe(colorizer, Path(checkpoint), painter)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        painter.close()

    app = FastAPI(title="s2p serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.painter = painter
    app.add_middleware(LimitBody, max_bytes=limits.max_upload_bytes)
    app.add_middleware(CatchBugs)  # added last: the outermost of ours
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(AnyHTTPException)  # ours, and Starlette's own 404/405
    async def _http_error(request, err: AnyHTTPException):
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, err: RequestValidationError):
        return JSONResponse({"error": validation_message(err)}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    async def api_info():
        return info

    @app.get("/api/gallery/{name}")
    async def api_gallery(name: str):
        if name not in gallery_images:
            raise HTTPException(404, f"the reference gallery has no image named {name!r}")
        return Response(gallery_images[name].thumbnail, media_type="image/png")

    @app.post("/api/paint")
    async def api_paint(sketch: UploadFile = File(...),
                        references: list[UploadFile] = File(default=[]),
                        gallery: list[str] = Form(default=[]),
                        extract: bool = Form(False),
                        size: int | None = Form(None)):
        check_paint_request(size, len(references), gallery, gallery_images, limits)
        sketch_upload = Upload(upload_name(sketch, "sketch"), await sketch.read())
        uploads = [Upload(upload_name(f, "reference"), await f.read()) for f in references]
        return await painter.run(painter.paint, sketch_upload, uploads, gallery, extract,
                                 size if size is not None else colorizer.resolution)

    return app


def check_paint_request(size: int | None, uploads: int, gallery: list[str],
                        gallery_images: dict, limits: Limits) -> None:
    """HTTPException for a paint request the page should not have sent, before any
    upload is read."""
    if size is not None and size != 0 and not 16 <= size <= limits.max_side:
        raise HTTPException(422, f"size: {size} px; use 0 (the sketch's own size) or "
                                 f"16..{limits.max_side}")
    count = uploads + len(gallery)
    if count == 0:
        raise HTTPException(422, "no reference: upload one or pick one from the gallery")
    if count > limits.max_references:
        raise HTTPException(400, f"{count} references: at most {limits.max_references} "
                                 "per request")
    for name in gallery:
        if name not in gallery_images:
            raise HTTPException(400, f"the reference gallery has no image named {name!r}")


def upload_name(upload: UploadFile, fallback: str) -> str:
    return Path(upload.filename or fallback).name or fallback
