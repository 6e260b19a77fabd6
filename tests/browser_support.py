"""The system Chromium driven by Playwright, for the review app's browser tests (test_web, test_review_ui):
importing this skips the importing module without playwright; ``needs_chromium`` skips without Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import pytest
import web_support as ws

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no system chromium on PATH (scripts/ci-chromium.sh)")

WIDTHS = {"desktop": (1280, 800), "tablet": (768, 1024), "phone": (390, 844)}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go for a person to look at: $EDGE_SCREEN_SHOTS, else a temporary folder."""
    d = Path(os.environ.get("EDGE_SCREEN_SHOTS") or tmp_path_factory.mktemp("shots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def login(
    browser, url: str, name: str = "rev", password: str = ws.PASSWORD, width: Optional[str] = None, js: bool = True
):
    """A new browser context (``width``: one of WIDTHS, else Playwright's default) with the log-in form
    submitted; (context, page). Whether it succeeded is the caller's to check."""
    options: dict = {"java_script_enabled": js}
    if width:
        w, h = WIDTHS[width]
        options["viewport"] = {"width": w, "height": h}
    ctx = browser.new_context(**options)
    page = ctx.new_page()
    page.goto(url + "/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    return ctx, page


def loaded(page, img) -> bool:
    """Whether the <img> behind locator ``img`` has loaded a picture."""
    return page.evaluate("(img) => img.complete && img.naturalWidth > 0", img.element_handle())
