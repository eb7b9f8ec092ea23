"""The live page in headless Chromium while a feed runs: it renders, updates in place, logs no error.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and Playwright; the screenshots go to
``$TTHF_ARTIFACTS`` or ``./artifacts/`` (live-page-1.png, live-page-2.png).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from browser import CHROMIUM, artifacts, needs_chromium
from servers import Market

from tthf.engine.serving.client import Feeder, feed_day
from tthf.engine.testing import DAYS
from tthf.errors import ServiceError

pytestmark = pytest.mark.slow


@needs_chromium
def test_the_live_page_renders_and_updates_in_place(market: Market, server_factory, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    server = server_factory(token="page-token")
    feeder = Feeder(
        server.address,
        DAYS[1],
        feed_day(str(market.data), DAYS[1])[:150],
        token="page-token",
        speed=1200,
        reconnect_s=2,
    )
    failed: list[BaseException] = []

    def feed() -> None:
        try:
            feeder.run()
        except ServiceError as exc:  # the server stopping at the test's end
            failed.append(exc)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    problems: list[str] = []
    folder = artifacts(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on(
                "console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(f"http://127.0.0.1:{server.http_port}/#token=page-token", wait_until="load", timeout=30_000)
            page.evaluate("window.__same_document = true")
            page.wait_for_function("document.getElementById('minute').textContent.includes('UTC')", timeout=30_000)
            first = page.text_content("#minute")
            page.screenshot(path=str(folder / "live-page-1.png"), full_page=True)
            page.wait_for_function(
                f"document.getElementById('minute').textContent !== {first!r} "
                "&& document.querySelectorAll('#strongest tbody tr').length > 0",
                timeout=30_000,
            )
            page.screenshot(path=str(folder / "live-page-2.png"), full_page=True)
            assert page.evaluate("window.__same_document === true")  # updated in place, not reloaded
            assert page.text_content("#ready") == "ready" and page.text_content("#feed") == "connected"
            rows = page.eval_on_selector_all("#weakest tbody tr, #volatile tbody tr", "els => els.length")
            assert rows >= 2
        finally:
            browser.close()
    assert not problems, problems
    thread.join(timeout=60)
    assert not thread.is_alive() and not failed, failed
