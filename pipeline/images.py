"""Image bytes in and out: the one place that decodes, encodes and resizes.

- `decode_rgb`: bytes from outside (ingest's files, `s2p colorize`, uploads),
  decoded safely; every failure is a `Rejected` with a short reason.
- `decode_stored`: bytes this project wrote (shards), RGB or grey.
- `encode_image`: deterministic PNG/WebP/JPEG bytes (shards, sample grids).
- `fit_to_square`, `resize_long_side`: the resizes of ingest and inference.

Policy for outside images (documented in the README):
  - decode by content, not extension; animated images are rejected;
  - colour modes converted to 8-bit RGB: CMYK, palette, 16-bit, grey+alpha;
    transparency composited over white (illustrations are drawn on paper);
  - declared size checked against `max_pixels` before any pixel is decoded (the
    one limit: Pillow's own decompression-bomb limit, ~89.5 M pixels, is off,
    since it would silently cap a larger max_pixels);
  - short side below `min_size` rejected; near-grey images rejected (no colour
    to learn), measured as mean chroma (max(R,G,B) - min(R,G,B)) / 255;
  - resize: short side to the target resolution then centre crop ("crop"),
    or long side to the target and pad with white ("pad").
"""
from __future__ import annotations

import io
import re

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False
# Every decode goes through `decode_rgb`, which checks the caller's pixel limit
# right after the header is read (where Pillow's check would run), so ours is the
# only limit; Pillow's would override a larger `ingest.max_pixels`.
Image.MAX_IMAGE_PIXELS = None


class Rejected(Exception):
    """An input that cannot become a training image; the message is the reason."""


def decode_rgb(data: bytes, max_pixels: int, limit_name: str = "ingest.max_pixels") -> np.ndarray:
    """Bytes of any common image format -> HxWx3 uint8 RGB, or `Rejected`.

    `limit_name` is the setting that `max_pixels` comes from, for the message."""
    if not data:
        raise Rejected("empty file")
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > max_pixels:
            raise Rejected(f"declared size {width}x{height} exceeds {limit_name}={max_pixels}")
        if getattr(img, "n_frames", 1) > 1:
            raise Rejected(f"animated image ({img.n_frames} frames)")
        img.load()
    except Rejected:
        raise
    except UnidentifiedImageError:  # its message is a BytesIO repr
        raise Rejected("cannot decode (not an image format Pillow knows)") from None
    except Exception as err:  # PIL raises many types for hostile bytes
        why = deterministic(f"cannot decode ({type(err).__name__}: {err})")
        raise Rejected(why[:200]) from None
    return _to_rgb(img)


def deterministic(reason: str) -> str:
    """A reason as one line without object addresses ("<... at 0x7f...>"), so
    the same input gives the same words in every run (rejects.parquet is hashed)."""
    reason = re.sub(r" at 0x[0-9a-fA-F]+", "", reason)
    return " ".join(reason.split())


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        grey = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def chroma(rgb: np.ndarray) -> float:
    """Mean chroma in [0, 1]: 0 for grey images, ~0.3+ for typical illustrations."""
    # Channel planes, not .max(axis=2): numpy reduces a 3-wide inner axis ~15x
    # slower, and this ran at full input size (77% of ingest's time at 512-768 px).
    # The same values in the same (H, W) layout: the same mean, bit for bit.
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return float(spread.mean() / 255.0)


def fit_to_square(rgb: np.ndarray, size: int, policy: str) -> np.ndarray:
    """Resize to size x size by the crop or pad policy (see module docstring)."""
    h, w = rgb.shape[:2]
    scale = size / (min(h, w) if policy == "crop" else max(h, w))
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=interp)
    if policy == "crop":
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return np.ascontiguousarray(resized[top : top + size, left : left + size])
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def prepare_illustration(
    data: bytes, size: int, policy: str, min_size: int, min_chroma: float, max_pixels: int
) -> np.ndarray:
    """Raw file bytes -> size x size RGB training image, or `Rejected`."""
    rgb = decode_rgb(data, max_pixels)
    h, w = rgb.shape[:2]
    if min(h, w) < min_size:
        raise Rejected(f"too small ({w}x{h} < ingest.min_size={min_size})")
    value = chroma(rgb)
    if value < min_chroma:
        raise Rejected(f"greyscale/monochrome (chroma {value:.3f} < {min_chroma})")
    return fit_to_square(rgb, size, policy)


ENCODINGS = {
    "png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 6]),
    # OpenCV's own PNG settings (fast): what sketch shards and sample grids have
    # always been written with; changing it would change every sketch shard's bytes.
    "png_fast": (".png", []),
    "webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # >100 = lossless
    "jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
}


def encode_image(pixels: np.ndarray, fmt: str = "png") -> bytes:
    """Deterministic encoding of RGB (HxWx3) or single-channel (HxW) uint8;
    `fmt` is a key of ENCODINGS."""
    arr = pixels[..., ::-1] if pixels.ndim == 3 else pixels  # OpenCV wants BGR
    suffix, params = ENCODINGS[fmt]
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(arr), params)
    if not ok:
        raise ValueError(f"could not encode image as {fmt}")
    return buf.tobytes()


def decode_stored(data: bytes | None, channels: int = 3) -> np.ndarray:
    """Decode bytes we wrote ourselves (shards): RGB HxWx3 or grey HxW uint8.
    Raises ValueError when they are empty or do not decode."""
    if not data:
        raise ValueError("empty stored image bytes")
    flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if arr is None:
        raise ValueError("corrupt stored image bytes")
    # cvtColor: the same bytes as arr[..., ::-1].copy(), 15x faster (numpy copies
    # a reversed 3-element axis element by element)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if channels == 3 else arr


def resize_long_side(img: np.ndarray, size: int) -> np.ndarray:
    """Scale so the long side is `size` (rounded; INTER_AREA to shrink, cubic to grow)."""
    h, w = img.shape[:2]
    scale = size / max(h, w)
    if scale == 1:
        return img
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
