"""`s2p` console command. Subcommands register in `SUBCOMMANDS`; each gets an
argparse sub-parser and a handler returning the exit status.

    s2p colorize SKETCH_OR_DIR --reference REF -o OUT [--checkpoint PATH]
                 [--extract] [--size N] [--device auto|cpu|cuda]

Exit status: 0 done; 1 a batch finished but some inputs failed (each named on
stderr); 2 nothing could be done (missing/corrupt input, bad checkpoint, usage).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

log = logging.getLogger("s2p")

DEFAULT_CHECKPOINT = "data/models/generator.pt"


def _add_colorize(sub) -> None:
    p = sub.add_parser(
        "colorize",
        help="paint a sketch (or a folder of sketches) in a reference's colours",
        description="Paint sketches with an exported generator. A folder input writes one "
        "PNG per image into the OUT folder; references may be one file or a folder "
        "(paired with the sorted inputs, cycling).",
    )
    p.add_argument("input", help="sketch image (PNG/JPEG) or a folder of them")
    p.add_argument("--reference", "-r", required=True, help="colour reference image or folder")
    p.add_argument("--checkpoint", "-c", default=DEFAULT_CHECKPOINT,
                   help=f"generator.pt exported by the train stage (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--output", "-o", required=True,
                   help="output file (.png/.jpg) for one input, a folder for a folder input")
    p.add_argument("--extract", action="store_true",
                   help="the inputs are colour illustrations: extract their line art first")
    p.add_argument("--size", type=int, default=None,
                   help="working long side in pixels, at most 4096 (default: the trained "
                   "resolution; 0 = native size); the output always has the input's size")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(handler=_colorize)


def _image_files(folder: Path) -> list[Path]:
    from pipeline.colorize import IMAGE_SUFFIXES

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _colorize(args) -> int:
    from pipeline.colorize import (OUTPUT_SUFFIXES, Colorizer, ColorizeError, check_work_size,
                                   looks_coloured, read_rgb, to_grey, write_image)

    src, ref, out = Path(args.input), Path(args.reference), Path(args.output)
    if args.size is not None and args.size < 0:
        raise ColorizeError(f"--size {args.size}: must be >= 0")
    if args.size:
        check_work_size(args.size)
    for path, what in ((src, "input"), (ref, "reference")):
        if not path.exists():
            raise ColorizeError(f"{path}: no such {what} file or folder")
    batch = src.is_dir()
    inputs = _image_files(src) if batch else [src]
    refs = _image_files(ref) if ref.is_dir() else [ref]
    if not inputs:
        raise ColorizeError(f"{src}: no PNG/JPEG images in this folder")
    if not refs:
        raise ColorizeError(f"{ref}: no PNG/JPEG images in this folder")
    if batch:
        if out.exists() and not out.is_dir():
            raise ColorizeError(f"{out}: the input is a folder, so --output must be a folder")
        targets = [out / f"{p.stem}.png" for p in inputs]
    else:
        targets = [out / f"{src.stem}.png" if out.is_dir() else out]
        if targets[0].suffix.lower() not in OUTPUT_SUFFIXES:
            raise ColorizeError(f"{out}: output must end in .png, .jpg or .jpeg")
    if not batch:
        # Fail on a bad input before the (slow) model load.
        read_rgb(src)
        read_rgb(refs[0])
    colorizer = Colorizer.from_checkpoint(args.checkpoint, args.device, extract=args.extract)
    codes: dict[Path, object] = {}
    failed = 0
    for i, (path, target) in enumerate(zip(inputs, targets)):
        ref_path = refs[i % len(refs)]
        try:
            image = read_rgb(path)
            if ref_path not in codes:
                prepared = colorizer.prepare_reference(read_rgb(ref_path))
                codes[ref_path] = colorizer.style_codes([prepared])[0]
            if not args.extract:
                if looks_coloured(image):
                    log.warning("%s looks like a colour image; pass --extract to take its "
                                "line art first", path)
                image = to_grey(image)
            try:
                painted = colorizer.colorize(image, None, args.size, style=codes[ref_path])
            except ColorizeError as err:  # too large to paint: name the input
                raise ColorizeError(f"{path}: {err}") from None
            write_image(target, painted)
            print(f"{path} + {ref_path.name} -> {target}")
        except ColorizeError as err:
            if not batch:
                raise
            failed += 1
            print(f"error: {err}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(inputs)} input(s) failed", file=sys.stderr)
        return 2 if failed == len(inputs) else 1
    return 0


SUBCOMMANDS: dict[str, Callable] = {"colorize": _add_colorize}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2p", description="Style2paints V1 pipeline tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.colorize import ColorizeError
    from pipeline.config import ConfigError
    from pipeline.logs import setup_logging

    setup_logging(level="WARNING")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ColorizeError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
