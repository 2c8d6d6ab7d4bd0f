"""Headless Chromium driven over WebDriver (the Debian chromium and chromium-driver packages)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@contextmanager
def chromium(width: int = 1280, height: int = 900, ca_file: Path | None = None) -> Iterator["WebDriver"]:
    """A headless browser window; the test is skipped, saying why, where the packages are missing.
    Pages that use WebCrypto need a secure context: https, or http on 127.0.0.1/localhost."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs the Debian packages chromium and chromium-driver (make test installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    if ca_file is not None:  # a test CA: the certificate is checked by the tests, not by the browser
        options.add_argument("--ignore-certificate-errors")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()

