"""`s2p` console command. Subcommands register in `SUBCOMMANDS`; each gets an
argparse sub-parser and a handler returning the exit status.

    s2p colorize SKETCH_OR_DIR --reference REF -o OUT [--checkpoint PATH]
                 [--extract] [--size N] [--device auto|cpu|cuda]
    s2p serve [--checkpoint PATH] [--host 127.0.0.1] [--port 8000] [--references DIR]

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


def _colorize(args) -> int:
    from pipeline.colorize import Colorizer, ColorizeError, read_rgb

    inputs, refs, targets, batch = _colorize_plan(args)
    if not batch:
        # Fail on a bad input before the (slow) model load.
        read_rgb(inputs[0])
        read_rgb(refs[0])
    colorizer = Colorizer.from_checkpoint(args.checkpoint, args.device, extract=args.extract)
    codes: dict[Path, object] = {}
    failed = 0
    for i, (path, target) in enumerate(zip(inputs, targets)):
        try:
            _colorize_one(colorizer, args, path, refs[i % len(refs)], target, codes)
        except ColorizeError as err:
            if not batch:
                raise
            failed += 1
            print(f"error: {err}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(inputs)} input(s) failed", file=sys.stderr)
        return 2 if failed == len(inputs) else 1
    return 0


def _colorize_plan(args):
    """(inputs, references, output paths, is a folder) from the arguments, or
    ColorizeError naming the bad one; nothing is read yet."""
    from pipeline.colorize import OUTPUT_SUFFIXES, ColorizeError, check_work_size, image_files

    src, ref, out = Path(args.input), Path(args.reference), Path(args.output)
    if args.size is not None and args.size < 0:
        raise ColorizeError(f"--size {args.size}: must be >= 0")
    if args.size:
        check_work_size(args.size)
    for path, what in ((src, "input"), (ref, "reference")):
        if not path.exists():
            raise ColorizeError(f"{path}: no such {what} file or folder")
    batch = src.is_dir()
    inputs = image_files(src) if batch else [src]
    refs = image_files(ref) if ref.is_dir() else [ref]
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
    return inputs, refs, targets, batch


def _colorize_one(colorizer, args, path: Path, ref_path: Path, target: Path, codes: dict):
    """Paint one input with one reference (its code cached in `codes`) and write it."""
    from pipeline.colorize import ColorizeError, looks_coloured, read_rgb, to_grey, write_image

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


def _add_serve(sub) -> None:
    from pipeline.serve.server import Limits

    limits = Limits()
    p = sub.add_parser(
        "serve",
        help="a local web page that paints sketches (offline; loopback only by default)",
        description="Serve a page that paints an uploaded sketch in the colours of an "
        "uploaded reference or of references from a gallery folder, one or several at once.",
    )
    p.add_argument("--checkpoint", "-c", default=DEFAULT_CHECKPOINT,
                   help=f"generator.pt exported by the train stage (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; any other "
                   "address lets others on the network use the painter, and says so)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port)")
    p.add_argument("--references", "-r", default=None,
                   help="a folder of reference images offered as a gallery in the page")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--max-upload-mb", type=float, default=limits.max_upload_bytes / 2**20,
                   help="largest request body (sketch + references), MiB")
    p.add_argument("--max-pixels", type=int, default=limits.max_pixels,
                   help="largest declared width x height of an uploaded image")
    p.add_argument("--max-side", type=int, default=limits.max_side,
                   help="largest painting, long side in pixels")
    p.add_argument("--max-queue", type=int, default=limits.max_queue,
                   help="requests accepted at once (one painting, the others waiting); more get 503")
    p.set_defaults(handler=_serve)


def _serve(args) -> int:
    from pipeline.colorize import Colorizer, ColorizeError
    from pipeline.serve.app import create_app
    from pipeline.serve.server import Limits, is_loopback, listen, run_server, url

    for name in ("max_upload_mb", "max_pixels", "max_side", "max_queue"):
        if getattr(args, name) <= 0:
            raise ColorizeError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be > 0")
    if args.references and not Path(args.references).is_dir():  # before the slow model load
        raise ColorizeError(f"{args.references}: no such folder (--references)")
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
                    max_side=args.max_side, max_queue=args.max_queue)
    sock = listen(args.host, args.port)  # a taken port fails before the slow model load
    try:
        if not is_loopback(args.host):
            print(f"warning: --host {args.host} is not a loopback address: anyone who can reach "
                  "this machine can use the painter and upload files to it (no authentication)",
                  file=sys.stderr)
        colorizer = Colorizer.from_checkpoint(args.checkpoint, args.device, extract=True)
        app = create_app(colorizer, args.checkpoint, args.references, limits)
        print(f"s2p serve: {url(sock)} paints with {args.checkpoint} "
              f"(style encoder {colorizer.encoder.source}); Ctrl-C stops", flush=True)
        try:
            run_server(app, sock)
        except KeyboardInterrupt:  # uvicorn has shut down cleanly, then re-raised Ctrl-C
            pass
        print("s2p serve: stopped", flush=True)
    finally:
        sock.close()
    return 0


SUBCOMMANDS: dict[str, Callable] = {"colorize": _add_colorize, "serve": _add_serve}


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
