"""Debian's Chromium as every browser test launches it: browser downloads are impossible here,
so Playwright drives /usr/bin/chromium, which `make test` installs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no {CHROMIUM}: `make test` installs Debian's chromium"
)


def launch(playwright: Any) -> Any:
    """A headless Chromium from a sync Playwright: `launch(playwright).new_page(...)`."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
