"""Write plots/offline.html: DVC's HTML page for `dvc plots show` / `dvc plots diff`
with Vega, Vega-Lite and Vega-Embed inlined, so the charts render with no network.

DVC's own page loads the three libraries from a CDN: offline every chart is
silently blank. The versions are the ones the installed dvc-render asks the CDN
for (`VegaRenderer.SCRIPTS`), fetched with `npm pack` (the npm registry, or the
npm cache when offline). `.dvc/config` names the page (`plots.html_template`).

    python scripts/vendor_vega.py            # rewrite plots/offline.html + licences
    python scripts/vendor_vega.py --check    # exit 1 if dvc-render asks for other versions
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "plots" / "offline.html"
LICENCES = REPO / "plots" / "licences"
BUILDS = {"vega": "vega.min.js", "vega-lite": "vega-lite.min.js", "vega-embed": "vega-embed.min.js"}
MARK = "<!-- s2p: {name}@{version} inlined by scripts/vendor_vega.py -->"

HEAD = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
"""
TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def wanted_versions() -> dict[str, str]:
    """{package: version} from the CDN script tags of the installed dvc-render."""
    from dvc_render.vega import VegaRenderer

    found = dict(re.findall(r"npm/(vega(?:-lite|-embed)?)@([0-9][^\"/]*)", VegaRenderer.SCRIPTS))
    if set(found) != set(BUILDS):
        raise SystemExit(f"error: dvc_render.vega.VegaRenderer.SCRIPTS names {sorted(found)}, "
                         f"expected {sorted(BUILDS)}")
    return found


def vendored_versions(page: Path = PAGE) -> dict[str, str]:
    text = page.read_text() if page.is_file() else ""
    return dict(re.findall(r"<!-- s2p: (vega(?:-lite|-embed)?)@(\S+) inlined", text))


def fetch(versions: dict[str, str], work: Path) -> dict[str, Path]:
    """`npm pack` each package; returns {package: its extracted folder}."""
    specs = [f"{name}@{version}" for name, version in versions.items()]
    subprocess.run(["npm", "pack", "--silent", *specs], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    folders = {}
    for name, version in versions.items():
        dest = work / name
        with tarfile.open(work / f"{name}-{version}.tgz") as tgz:
            tgz.extractall(dest, filter="data")
        folders[name] = dest / "package"
    return folders


def page(versions: dict[str, str], folders: dict[str, Path]) -> str:
    scripts = []
    for name, build in BUILDS.items():
        code = (folders[name] / "build" / build).read_text()
        if "</script" in code.lower():
            raise SystemExit(f"error: {name}/{build} contains '</script': cannot inline it")
        scripts.append(f"    {MARK.format(name=name, version=versions[name])}\n"
                       f"    <script type=\"text/javascript\">{code}</script>\n")
    return HEAD + "".join(scripts) + TAIL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare the vendored versions with dvc-render's")
    args = parser.parse_args()
    versions = wanted_versions()
    if args.check:
        have = vendored_versions()
        if have != versions:
            print(f"error: {PAGE.relative_to(REPO)} has {have}, dvc-render wants {versions}: "
                  "run python scripts/vendor_vega.py", file=sys.stderr)
            raise SystemExit(1)
        print(f"{PAGE.relative_to(REPO)}: {versions}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folders = fetch(versions, Path(tmp))
        PAGE.parent.mkdir(exist_ok=True)
        PAGE.write_text(page(versions, folders))
        LICENCES.mkdir(exist_ok=True)
        for name, folder in folders.items():
            (LICENCES / f"{name}-{versions[name]}.LICENSE").write_text(
                (folder / "LICENSE").read_text())
    print(f"wrote {PAGE.relative_to(REPO)} ({PAGE.stat().st_size // 1024} KiB): {versions}")


if __name__ == "__main__":
    main()
