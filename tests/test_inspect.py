"""Inspect, compare and share a finished run the way DVC users do (issue 11):
one real `dvc repro` of the tiny params in a fresh git copy of the project, then

- the run's small records are in git next to dvc.lock, and `dvc metrics show`,
  `dvc metrics diff` and `dvc exp show --only-changed` compare revisions in at
  most 100 columns (items 1, 2);
- every chart of `dvc plots show` and `dvc plots diff` renders in a real headless
  chromium with the network cut off (item 3);
- `git clone` + `dvc pull` + `dvc repro` of the pushed run runs nothing (item 4).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.browser import require_browser, start_chromium, wait_for
from tests.conftest import REPO
from tests.project import GIT, project_copy, run

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
STAGES = ("ingest", "extract", "featurize", "train", "evaluate")
HEADLINE = {"de", "hit", "swap", "de_mean", "de_own", "psnr", "ssim", "img_s", "g_l1"}
WIDTH = 100


def env(tmp: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "S2P_"))}
    return {**keep, "PATH": f"{BIN}{os.pathsep}{keep.get('PATH', '')}", "COLUMNS": str(WIDTH),
            "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def dvc(repo: Path, *args: str, timeout: float = 120, **kw) -> str:
    return run([BIN / "dvc", *args], cwd=repo, env=env(repo.parent), timeout=timeout, **kw)


def widest(text: str) -> int:
    return max((len(line.rstrip()) for line in text.splitlines()), default=0)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run, committed, its outputs pushed to a local remote."""
    tmp = tmp_path_factory.mktemp("inspect")
    repo = project_copy(tmp / "repo")
    dvc(repo, "repro", timeout=900)
    remote = tmp / "remote"
    run([REPO / "scripts" / "dvc_remote.sh", str(remote)], cwd=repo, env=env(tmp))
    dvc(repo, "push", timeout=300)
    run(["git", "add", "-A"], cwd=repo)
    run([*GIT, "commit", "-qm", "finished tiny run"], cwd=repo)
    return {"repo": repo, "remote": remote, "tmp": tmp}


def test_records_in_git_and_metrics_fit_100_columns(finished):
    repo = finished["repo"]
    tracked = set(run(["git", "ls-files", "data"], cwd=repo).split())
    assert {"data/summary.json", "data/evaluate/per_part.csv", "data/evaluate/swap_per_part.csv",
            *(f"data/metrics/{s}.json" for s in STAGES)} <= tracked
    assert any(p.startswith("data/train/dvclive/plots/metrics/loss/") for p in tracked)
    assert not [p for p in tracked if p.endswith((".png", ".pt", ".parquet"))]  # DVC's, not git's
    assert run(["git", "status", "--porcelain"], cwd=repo) == ""  # nothing else left over

    shown = dvc(repo, "metrics", "show")
    assert widest(shown) <= WIDTH, shown
    header, row = shown.splitlines()
    assert set(header.split()[1:]) == HEADLINE and row.startswith("data/summary.json ")
    assert "!" not in row
    # HEAD's metrics load (they are in git): no "failed to load" for any revision.
    diff = dvc(repo, "metrics", "diff", "HEAD", "--all")
    assert widest(diff) <= WIDTH and "data/summary.json" in diff, diff


def test_experiment_compared_with_its_baseline(finished):
    repo = finished["repo"]
    # Only evaluate depends on evaluate.pairs: a cheap experiment whose metrics move.
    out = dvc(repo, "exp", "run", "-n", "fewer-pairs", "-S", "evaluate.pairs=3", timeout=600)
    assert "Running stage 'evaluate'" in out and "Running stage 'train'" not in out, out
    table = dvc(repo, "exp", "show", "--only-changed", "--drop", "data/", "--no-pager")
    assert widest(table) <= WIDTH, table
    assert "…" not in table and "!" not in table, table
    header = next(line for line in table.splitlines() if "Experiment" in line).split()
    assert "fewer-pairs" in table and "evaluate.pairs" in header, table
    assert set(header) & HEADLINE, table  # the metrics that moved, by their short names
    diff = dvc(repo, "metrics", "diff")
    assert widest(diff) <= WIDTH and re.search(r"data/summary\.json\s+\w+\s", diff), diff


# vega-embed marks each container it drew into with the class "vega-embed".
CHARTS_JS = """
const charts = Array.from(document.querySelectorAll('.vega-embed'));
function inked(div) {  // pixels a chart painted (axes, marks, text), 0 when blank
    const c = div.querySelector('canvas');
    if (!c || !c.width || !c.height) return div.querySelector('svg path') ? 1000 : 0;
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
    return n;
}
"""


def _render_all(page: Path, profile: Path, expected: int) -> dict:
    """Open `page` in chromium with every network request failing; wait until the
    `expected` Vega charts have painted; return counts of charts, painted charts
    and images."""
    driver = start_chromium(profile, extra_flags=("--proxy-server=http://127.0.0.1:9",
                                                  "--proxy-bypass-list=<-loopback>"))
    try:
        driver.get(page.as_uri())
        painted = f"(() => {{ {CHARTS_JS} return charts.filter(d => inked(d) > 500).length; }})()"
        total = f"(() => {{ {CHARTS_JS} return charts.length; }})()"
        try:
            wait_for(driver, f"{painted} >= {expected}", timeout_s=60)
        except Exception:
            pass  # the counts below say which charts stayed blank
        return driver.execute_script(f"""return {{
            charts: {total}, painted: {painted},
            images: document.images.length,
            images_ok: Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length,
            remote: performance.getEntriesByType('resource').map(r => r.name)
                .filter(n => !n.startsWith('file:') && !n.startsWith('data:')),
        }};""")
    finally:
        driver.quit()


@pytest.mark.parametrize("command", [("plots", "show"), ("plots", "diff", "HEAD")])
def test_every_plot_renders_offline_in_chromium(finished, command, tmp_path):
    require_browser()
    repo = finished["repo"]
    out = tmp_path / "plots"
    dvc(repo, *command, "-o", str(out))
    html = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and not re.search(r"<script[^>]+src=\"?https?:", html)
    # loss curves + the two per-part bar charts; the PNG grids and training samples
    assert html.count("vegaEmbed(") >= 11 and html.count("<img") >= 6
    got = _render_all(out / "index.html", tmp_path / "profile", html.count("vegaEmbed("))
    assert got["charts"] == html.count("vegaEmbed(") and got["painted"] == got["charts"], got
    assert got["images_ok"] == got["images"] >= 6, got
    assert got["remote"] == [], got


def test_clone_pull_repro_is_a_no_op(finished, tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(finished["repo"]), str(clone)])
    config = (clone / ".dvc" / "config").read_text()
    assert str(finished["remote"]) in config  # an absolute URL: the clone finds it
    dvc(clone, "pull", timeout=300)
    assert (clone / "data" / "train" / "checkpoints" / "latest.pt").is_file()  # resumable
    out = dvc(clone, "repro", timeout=600)
    assert "Running stage" not in out, out
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    assert "up to date" in dvc(clone, "status")
    assert run(["git", "status", "--porcelain"], cwd=clone) == ""
