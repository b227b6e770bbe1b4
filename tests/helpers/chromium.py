"""Screenshots with headless Chromium (Debian's ``chromium``, installed by ``make setup``): what a
user sees when they open a report, a page or a figure, checked as pixels.

Without a browser the calling test skips with the reason, unless ``BYOC_REQUIRE_BROWSER=1`` or in CI
(:mod:`tests.helpers.required`), where it fails. ``BYOC_SCREENSHOT_DIR=<folder>`` keeps every screenshot there to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import required


def chromium() -> str:
    """The browser's path; skips (or fails under BYOC_REQUIRE_BROWSER=1) when there is none."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        if os.environ.get("BYOC_REQUIRE_BROWSER") == "1":
            pytest.fail("BYOC_REQUIRE_BROWSER=1 but no chromium on PATH")
        required.missing("headless Chromium is not installed (apt-get install chromium); "
                         "set BYOC_REQUIRE_BROWSER=1 to make this a failure")
    return browser


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2000):
    """Open ``page`` (an HTML file or an image) in headless Chromium; returns the screenshot as a
    greyscale PIL image. The browser fetches nothing from the network."""
    from PIL import Image

    profile = png.with_name(png.stem + "-chromium-profile")
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
           f"--window-size={width},{height}", Path(page).resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    keep = os.environ.get("BYOC_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)
    return Image.open(png).convert("L")


def assert_not_blank(image, dark_share: float = 0.01) -> None:
    """Something is drawn: the pixels vary, and dark pixels (text, lines) cover a real part."""
    from PIL import ImageStat

    assert ImageStat.Stat(image).stddev[0] > 20, "screenshot is (nearly) blank"
    dark = sum(image.histogram()[:128]) / (image.size[0] * image.size[1])
    assert dark > dark_share, f"only {dark:.3%} dark pixels"
