"""Debian's chromium, headless, driven through its own chromedriver (Selenium),
for tests and scripts that look at a page the way a person would.

`make browser` installs both (`make test` does it first when CI=true). Selenium
is given the driver's path, so it never tries to download a driver or browser.
The flags matter on a closed network: without them chromium waits on its
background services (component updates, sync, first-run) and the session hangs.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check",
)


def missing_browser() -> str | None:
    """Which of chromium and chromedriver is not on PATH, or None."""
    absent = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    return f"{' and '.join(absent)} not found on PATH" if absent else None


def require_browser() -> None:
    """Skip the calling test without a browser; in CI (CI=true) fail instead: the
    browser tests must run there, and `make test` installs chromium first."""
    import pytest

    why = missing_browser()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {why}: `make test` installs it first when CI=true (make browser)")
    pytest.skip(f"{why} (`make browser` installs Debian's chromium and chromium-driver)")


def start_chromium(profile_dir: Path, width: int = 1400, height: int = 1000,
                   extra_flags: tuple[str, ...] = ()):
    """A headless chromium WebDriver with a fresh profile in `profile_dir`; call .quit().
    `extra_flags`, e.g. a dead proxy, to prove a page needs no network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, *extra_flags):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    driver.set_page_load_timeout(60)
    return driver


def wait_for(driver, script: str, timeout_s: float = 90):
    """Poll a JavaScript expression until it is truthy; return its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(
        lambda d: d.execute_script(f"return {script};"))
