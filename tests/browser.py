"""A report page in headless Chromium, as a person sees it (shared by the report tests).

Needs Debian's ``chromium`` (``.ci/run`` installs it) and Playwright, which drives that
binary (it downloads no browser of its own). Screenshots go to ``$TTHF_ARTIFACTS`` or
``./artifacts/`` (docs/evaluation.md, "Testing").
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium binary on PATH (chromium, chromium-browser, google-chrome); .ci/run installs Debian's chromium",
)


def artifacts(tmp_path: Path) -> Path:
    """``$TTHF_ARTIFACTS``, else ``./artifacts``; the test's tmp folder when neither can be created."""
    for folder in (os.environ.get("TTHF_ARTIFACTS"), "artifacts"):
        if folder:
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
                return Path(folder)
            except OSError:
                continue
    return tmp_path


def render(report: Path, shot: Path, probe: str | None = None) -> tuple[list[str], list[dict[str, Any]], Any]:
    """Open ``report`` offline, save a full-page screenshot to ``shot``; return the problems seen
    (console errors, page errors, any request), each image's file, load state and size, and the
    value of the JavaScript expression ``probe`` on the loaded page (None without one)."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    url = report.as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on(
                "request",
                lambda r: None if r.url == url or r.url.startswith("data:") else problems.append(f"fetched {r.url}"),
            )
            page.goto(url, wait_until="load")
            images = page.eval_on_selector_all(
                "img",
                "els => els.map(e => ({file: e.dataset.file, ok: e.complete && e.naturalWidth > 0, "
                "w: e.getBoundingClientRect().width, h: e.getBoundingClientRect().height}))",
            )
            probed = page.evaluate(probe) if probe else None
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return problems, images, probed
