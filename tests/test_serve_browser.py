"""`s2p serve` in a real browser (Debian's chromium, headless, via Selenium):
upload a sketch and a reference, click Paint, and a result of the right size
appears; the swap view; an error shown in the page; nothing fetched from outside.

Skips without chromium on a user's machine; fails in CI (CI=true), where
`make test` installs it first (`make browser`)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from browser import require_browser, start_chromium, wait_for
from test_serve import site, sketch_pixels  # noqa: F401 (site: the served tiny model)


@pytest.fixture(scope="module")
def chromium_here():
    require_browser()  # before the (module-scoped) site is built


@pytest.fixture
def page(chromium_here, site, tmp_path):  # noqa: F811
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        driver.get(site["url"])
        yield driver
    finally:
        driver.quit()


def results(driver) -> list[tuple[int, int]]:
    """(naturalWidth, naturalHeight) of the result images, once all have loaded."""
    return wait_for(driver, """(() => {
        const imgs = [...document.querySelectorAll('#results img.result')];
        if (!imgs.length || !imgs.every(i => i.complete && i.naturalWidth)) return null;
        return imgs.map(i => [i.naturalWidth, i.naturalHeight]);
    })()""")


def test_upload_sketch_and_reference_then_paint(page, site, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    sketch, reference = tmp_path / "sketch.png", tmp_path / "reference.jpg"
    Image.fromarray(sketch_pixels()).save(sketch)
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(reference)

    assert wait_for(page, "document.getElementById('checkpoint').textContent !== 'loading…' "
                          "&& document.getElementById('checkpoint').textContent") == str(site["checkpoint"])
    assert page.find_element(By.ID, "fallback").is_displayed()  # the random-weight encoder, said plainly
    assert "random" in page.find_element(By.ID, "encoder").text
    assert page.find_element(By.ID, "extractor").text.startswith("classical")

    page.find_element(By.ID, "sketch").send_keys(str(sketch))
    page.find_element(By.ID, "references").send_keys(str(reference))
    page.find_element(By.ID, "paint").click()
    assert results(page) == [[22, 32]]  # 53x37 sketch, long side to the trained 32 px
    figures = page.find_elements(By.CSS_SELECTOR, "#results figure")
    assert [f.find_element(By.TAG_NAME, "figcaption").text.split(" ·")[0] for f in figures] == [
        "sketch", "reference", "22×32"]
    link = page.find_element(By.CSS_SELECTOR, "#results a.download")
    assert link.get_attribute("download") == "sketch_reference.png"
    assert link.get_attribute("href").startswith("data:image/png;base64,")
    assert not page.find_element(By.ID, "error").is_displayed()

    # Swap view: the same sketch with the uploaded reference and two gallery images, at 256 px.
    page.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="swap"]').click()
    for name in ("red.png", "blue.jpg"):
        page.find_element(By.CSS_SELECTOR, f'#gallery button[data-name="{name}"]').click()
    page.find_element(By.CSS_SELECTOR, '#size option[value="256"]').click()
    page.find_element(By.ID, "paint").click()
    wait_for(page, "document.querySelectorAll('#results img.result').length === 3")
    assert results(page) == [[179, 256]] * 3  # 37 * 256 / 53 = 178.7
    assert "painted 3 images (256 px)" in page.find_element(By.ID, "status").text

    # Everything the page loaded came from the app itself.
    urls = page.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(u => u.startsWith('http'))")
    assert urls and all(u.startswith(site["url"]) for u in urls), urls


def test_bad_file_is_a_message_in_the_page(page, site, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    bad = tmp_path / "notes.png"
    bad.write_text("these are notes, not a picture")
    wait_for(page, "document.querySelectorAll('#gallery button').length === 2")
    page.find_element(By.ID, "sketch").send_keys(str(bad))
    page.find_element(By.CSS_SELECTOR, '#gallery button[data-name="red.png"]').click()
    page.find_element(By.ID, "paint").click()
    message = wait_for(page, "!document.getElementById('error').hidden "
                             "&& document.getElementById('error').textContent")
    assert message.startswith("sketch notes.png: cannot decode")
    assert not page.find_elements(By.CSS_SELECTOR, "#results img.result")
    assert not page.find_element(By.ID, "paint").get_attribute("disabled")  # ready for the next try
