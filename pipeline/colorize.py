"""Inference: paint a sketch in a reference's colours with an exported generator.

Used by the `s2p colorize` command and by the evaluate stage, so the numbers in
the benchmark come from exactly the code users run.

Sizes. The U-net needs H and W to be multiples of 2**depth. Any input is
  1. resized so its long side is `size` (default: the resolution the generator
     was trained at, read from generator.json; 0 keeps the native size). Line
     width and part size relative to the network's receptive field then match
     training, which matters more than pixels: a 128-px model run on a 1000-px
     sketch sees lines and regions it has never seen at that scale;
  2. padded on the bottom and right with white paper to the next multiple;
  3. painted, cropped back, and resized to the input's original size.
The reference is prepared as ingest prepares a training image (short side to the
training resolution, centre crop) before the style encoder reads it, so V(y)
comes from the same kind of picture the generator was trained with.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import ExtractConfig, FeaturizeConfig
from pipeline.images import Rejected, chroma, decode_rgb, fit_to_square, resize_long_side

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
OUTPUT_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
MAX_PIXELS = 100_000_000  # an input's declared width x height, checked before decoding
# The working picture's long side (after --size). The U-net's activations grow with
# its area (the CPU default needs about 64 bytes a pixel per layer, the paper scale
# four times that), so a bigger picture is refused with a clear line, not painted
# until memory runs out.
MAX_WORK_SIDE = 4096


class ColorizeError(RuntimeError):
    """A problem with an input, an output path or the checkpoint: one line, names the file."""


# ---------------------------------------------------------------- image I/O


def read_rgb(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise ColorizeError(f"{path}: no such file")
    if not path.is_file():
        raise ColorizeError(f"{path}: not a file")
    try:
        return decode_rgb(path.read_bytes(), MAX_PIXELS)
    except Rejected as why:
        raise ColorizeError(f"{path}: {why}") from None
    except OSError as err:
        raise ColorizeError(f"{path}: unreadable ({err.strerror or err})") from None


def image_files(folder: Path) -> list[Path]:
    """The PNG/JPEG/WebP/BMP files of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    fmt = OUTPUT_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ColorizeError(f"{path}: output must end in .png, .jpg or .jpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if fmt == "JPEG" else {}
    try:
        Image.fromarray(np.asarray(rgb, np.uint8)).save(path, fmt, **options)
    except OSError as err:
        raise ColorizeError(f"{path}: cannot write ({err.strerror or err})") from None
    return path


# ---------------------------------------------------------------- geometry


def pad_to_multiple(img: np.ndarray, multiple: int, fill: int = 255) -> np.ndarray:
    """Pad bottom/right with `fill` so H and W are multiples of `multiple`."""
    h, w = img.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return img
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (img.ndim - 2)
    return np.pad(img, pad, mode="constant", constant_values=fill)


def resize_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    if img.shape[:2] == (height, width):
        return img
    shrink = height * width < img.shape[0] * img.shape[1]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


# ---------------------------------------------------------------- the model


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ColorizeError("--device cuda: no CUDA device is available here")
    return torch.device(device)


def _recorded_featurize(checkpoint, meta: dict) -> FeaturizeConfig:
    """The style-code settings recorded at training time (defaults where absent)."""
    try:
        return FeaturizeConfig(**_known(FeaturizeConfig, meta.get("featurize")))
    except ValueError as err:  # pydantic: a bad value recorded in the .json
        raise ColorizeError(f"{checkpoint}: bad featurize settings in its .json "
                            f"({str(err).splitlines()[0]})") from None


def extract_settings(meta: dict) -> ExtractConfig:
    """The sketch extractor recorded at training time (defaults where absent)."""
    known = _known(ExtractConfig, meta.get("extract"))
    if "method" not in known and meta.get("extractor") in ("sketchkeras", "classical"):
        known["method"] = meta["extractor"]
    return ExtractConfig(**known)


def _known(section, raw) -> dict:
    """Keys of a recorded params section that `section` still has (runners excluded)."""
    raw = raw if isinstance(raw, dict) else {}
    return {k: v for k, v in raw.items() if k in section.model_fields and k != "runner"}


@dataclass
class Colorizer:
    G: object  # Generator in eval mode
    meta: dict
    encoder: object | None  # StyleEncoder; None for an oracle_palette model
    device: object
    extractor: object | None = None
    featurize: FeaturizeConfig = FeaturizeConfig()

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "auto",
                        extract: bool = False, featurize: FeaturizeConfig | None = None
                        ) -> "Colorizer":
        """Load generator.pt (+ .json); build the style encoder it was trained with:
        the same code, input size, seed and precision as the codes it learnt from.

        `featurize` overrides the recorded encoder settings (the evaluate stage
        passes its params'). A checkpoint trained on ImageNet style codes refuses
        to run on the random fallback encoder (and vice versa), and one trained on
        another code refuses outright: the codes would mean nothing to it.
        """
        from pipeline.featurize import encoder_for
        from pipeline.models import load_generator
        from pipeline.models.export import CheckpointError

        dev = resolve_device(device)
        try:
            G, meta = load_generator(checkpoint, map_location=dev)
        except CheckpointError as err:
            raise ColorizeError(str(err)) from None
        recorded = _recorded_featurize(checkpoint, meta)
        featurize = featurize or recorded
        if featurize.code != recorded.code:
            raise ColorizeError(f"{checkpoint}: trained on featurize.code={recorded.code} "
                                f"codes, asked to paint with {featurize.code} codes")
        encoder = None
        if featurize.code != "oracle_palette":
            try:
                encoder = encoder_for(featurize).to(dev).eval()
            except ValueError as err:  # an unreadable weights file
                raise ColorizeError(str(err)) from None
            trained_with = meta.get("style_encoder")
            if trained_with and trained_with != encoder.source:
                raise ColorizeError(
                    f"{checkpoint}: trained with {trained_with} style codes but the style "
                    f"encoder here is {encoder.source} (check featurize.weights)"
                )
        extractor = None
        if extract:
            from pipeline.sketch import make_extractor

            extractor = make_extractor(extract_settings(meta))
        return cls(G, meta, encoder, dev, extractor, featurize)

    @property
    def code(self) -> str:
        return self.featurize.code

    @property
    def multiple(self) -> int:
        return 2 ** int(self.meta["model"]["depth"])

    @property
    def resolution(self) -> int | None:
        value = self.meta.get("resolution")
        return int(value) if value else None

    def prepare_reference(self, reference: np.ndarray) -> np.ndarray:
        size = self.resolution or min(reference.shape[:2])
        return fit_to_square(reference, size, "crop")

    def style_codes(self, references: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """[N, D] float32 V(y) of prepared references (all the same size)."""
        import torch

        if self.encoder is None:
            raise ColorizeError("this generator was trained on the oracle palette code "
                                "(featurize.code: oracle_palette): it paints only toon "
                                "references whose palette is known, not images")
        codes = []
        with torch.inference_mode():
            for i in range(0, len(references), batch_size):
                batch = np.stack(references[i : i + batch_size])
                code = self.encoder.encode(batch)
                codes.append(code.cpu().numpy() if hasattr(code, "cpu") else np.asarray(code))
        return np.concatenate(codes).astype(np.float32)

    def palette_codes(self, palettes: list) -> np.ndarray:
        """[N, 24] oracle codes of toon palettes (an oracle_palette model only)."""
        from pipeline.oracle import palette_code

        return np.stack([palette_code(p) for p in palettes])

    def paint(self, sketches: np.ndarray, styles: np.ndarray) -> np.ndarray:
        """[B,H,W] uint8 sketches + [B,D] codes -> [B,H,W,3] uint8 (any H, W)."""
        import torch

        sketches = np.asarray(sketches, np.uint8)
        h, w = sketches.shape[1:3]
        padded = np.stack([pad_to_multiple(s, self.multiple) for s in sketches])
        x = torch.from_numpy(padded).float().div(127.5).sub(1.0)[:, None].to(self.device)
        v = torch.from_numpy(np.asarray(styles, np.float32)).to(self.device)
        try:
            with torch.inference_mode():
                out = self.G(x, v)
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
            if not isinstance(err, (torch.OutOfMemoryError, MemoryError)) and \
                    "can't allocate memory" not in str(err):
                raise
            raise ColorizeError(f"out of memory painting {len(sketches)} picture(s) of {w}x{h} "
                                f"on {self.device}: try a smaller --size") from None
        out = out[:, :, :h, :w].float().clamp(-1, 1).add(1).mul(127.5).round()
        return out.byte().permute(0, 2, 3, 1).cpu().numpy()

    def extract(self, rgb: np.ndarray) -> np.ndarray:
        if self.extractor is None:
            raise ColorizeError("no sketch extractor loaded (pass --extract)")
        return np.asarray(self.extractor.extract([rgb])[0], np.uint8)

    def colorize(self, sketch_input: np.ndarray, reference: np.ndarray,
                 size: int | None = None, style: np.ndarray | None = None) -> np.ndarray:
        """One picture of any size -> HxWx3 uint8 of the same size.

        `sketch_input` is a grey sketch (HxW), or a colour image (HxWx3) when an
        extractor is loaded; `size` is the working long side (None: the trained
        resolution; 0: native).
        """
        h, w = sketch_input.shape[:2]
        size = self.resolution if size is None else size
        check_work_size(size or max(h, w), "the input's" if not size else None)
        work = resize_long_side(sketch_input, size) if size else sketch_input
        if work.ndim == 3:
            work = self.extract(work) if self.extractor is not None else to_grey(work)
        if style is None:
            style = self.style_codes([self.prepare_reference(reference)])[0]
        painted = self.paint(work[None], style[None])[0]
        return resize_to(painted, h, w)


def check_work_size(side: int, native: str | None = None) -> None:
    """Refuse a working long side above MAX_WORK_SIDE (`native`: the size is the
    input's own, from --size 0)."""
    if side > MAX_WORK_SIDE:
        what = f"{native} long side {side}" if native else f"--size {side}"
        raise ColorizeError(f"{what}: the working size is at most {MAX_WORK_SIDE} pixels "
                            "(pass a smaller --size; the output keeps the input's size)")


def looks_coloured(rgb: np.ndarray) -> bool:
    """A 'sketch' with real colour in it is probably an illustration (use --extract)."""
    # Scanned or JPEG line art measures <= 0.02 mean chroma; illustrations >= 0.03.
    return chroma(rgb) > 0.03
