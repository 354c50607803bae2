"""The README's `s2p serve` screenshot: the page in headless chromium after a swap
painting (one sketch, several gallery references).

    python scripts/serve_screenshot.py [--checkpoint data/models/generator.pt]
        [--sketch ../shared/samples/real/sketch/s2p_test_2.jpg]
        [--references ../shared/samples/real/color] [--pick s2p_style_1.jpg ...]
        [--size 256] [--out docs/serve_page.png]

Needs Debian's chromium and chromedriver (`make browser`).
"""
from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from PIL import Image  # noqa: E402

from browser import missing_browser, start_chromium, wait_for  # noqa: E402
from pipeline.cli import DEFAULT_CHECKPOINT  # noqa: E402

SAMPLES = REPO.parent / "shared" / "samples" / "real"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="(run from the repo root)")
    ap.add_argument("--sketch", default=str(SAMPLES / "sketch" / "s2p_test_2.jpg"))
    ap.add_argument("--references", default=str(SAMPLES / "color"))
    ap.add_argument("--pick", nargs="+", default=["s2p_style_1.jpg", "s2p_style_4.jpg", "s2p_v4ref_2.png"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default=str(REPO / "docs" / "serve_page.png"))
    args = ap.parse_args()
    if missing_browser():
        raise SystemExit(f"error: {missing_browser()} (make browser)")

    from selenium.webdriver.common.by import By

    from pipeline.colorize import Colorizer
    from pipeline.serve.app import create_app
    from pipeline.serve.server import running

    colorizer = Colorizer.from_checkpoint(args.checkpoint, "cpu", extract=True)
    app = create_app(colorizer, args.checkpoint, args.references)
    with running(app) as url, tempfile.TemporaryDirectory() as profile:
        driver = start_chromium(Path(profile), width=1280, height=900)
        try:
            driver.get(url)
            wait_for(driver, "document.querySelectorAll('#gallery button img').length > 0")
            driver.find_element(By.ID, "sketch").send_keys(str(Path(args.sketch).resolve()))
            driver.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="swap"]').click()
            for name in args.pick:
                driver.find_element(By.CSS_SELECTOR, f'#gallery button[data-name="{name}"]').click()
            driver.find_element(By.CSS_SELECTOR, f'#size option[value="{args.size}"]').click()
            driver.find_element(By.ID, "paint").click()
            wait_for(driver, f"document.querySelectorAll('#results img.result').length === {len(args.pick)}"
                             " && [...document.querySelectorAll('#results img')].every(i => i.complete)")
            shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                          {"format": "png", "captureBeyondViewport": True})
            page = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
            # 256 colours: a third of the bytes in git, no visible change on a page like this.
            page.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                args.out, optimize=True)
        finally:
            driver.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
