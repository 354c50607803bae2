"""plots/offline.html: DVC's plots page with Vega inlined, the repo's default
(issue 11, item 3). The browser test that the charts render is tests/test_inspect.py."""
from __future__ import annotations

import configparser
import re
import subprocess
import sys

from conftest import REPO


def test_vendored_vega_matches_dvc_render_and_is_the_default():
    proc = subprocess.run([sys.executable, "scripts/vendor_vega.py", "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    page = (REPO / "plots" / "offline.html").read_text()
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    # {scripts} would let DVC add its CDN <script src> tags back.
    assert "{scripts}" not in page and not re.search(r"<script[^>]*\bsrc=", page)
    for name in ("vega", "vega-lite", "vega-embed"):
        assert (REPO / "plots" / "licences").glob(f"{name}-*.LICENSE")
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert (REPO / ".dvc" / config["plots"]["html_template"]).resolve() == REPO / "plots" / "offline.html"


def test_check_fails_when_versions_differ(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import vendor_vega
    finally:
        sys.path.pop(0)
    other = tmp_path / "offline.html"
    other.write_text((REPO / "plots" / "offline.html").read_text().replace("vega@5.20.2", "vega@5.1.0"))
    assert vendor_vega.vendored_versions(other)["vega"] == "5.1.0"
    assert vendor_vega.vendored_versions(other) != vendor_vega.wanted_versions()
