"""Headless Chromium for tests that look at a page the way a person would.

Debian's ``chromium`` package, started as its maintainers advise for a closed network:
without the background-networking flags it keeps trying to reach Google's hosts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # Scripts run in virtual time, so the page is dumped after every chart has drawn.
    "--virtual-time-budget=15000",
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed: 'apt-get install chromium' (Debian) enables the browser tests")


def _run(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [chromium(), *_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM after the page's scripts ran."""
    return _run(page, profile, "--dump-dom").stdout


def screenshot(page: Path, out: Path, profile: Path, size: tuple[int, int] = (1280, 2400)) -> Path:
    _run(page, profile, f"--screenshot={out}", f"--window-size={size[0]},{size[1]}")
    return out
