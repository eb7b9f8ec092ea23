"""The report as a person sees it: a self-contained page, every figure rendered, in headless Chromium.

The browser test needs Debian's ``chromium`` (``.ci/run`` installs it) and Playwright,
which drives that binary (it downloads no browser of its own). It keeps a full-page
screenshot in ``$TTHF_ARTIFACTS`` or ``./artifacts/`` (docs/evaluation.md, "Testing").
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tthf.engine.evaluation.evaluate import evaluate
from tthf.engine.evaluation.report import FIGURES
from tthf.engine.testing import artifacts_dir

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.fixture(scope="module")
def report(tiny_run) -> Path:
    result = evaluate(tiny_run.store, tiny_run.run_id, f"2024-01-02:{tiny_run.predicted.split(':')[1]}", name="page")
    return Path(result.uri) / "report.html"


def test_page_is_self_contained(report: Path) -> None:
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == len(FIGURES)
    assert not re.findall(r'(?:src|href)="(?!data:)', page)  # nothing to fetch: it opens offline
    for name, title, _ in FIGURES:
        assert f'data-file="{name}"' in page and (report.parent / name).stat().st_size > 5_000, title
    assert "2024-01-02" in page and "without a predictions file" in page


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium binary on PATH (chromium, chromium-browser, google-chrome); .ci/run installs Debian's chromium",
)
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
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
            shot = artifacts_dir(tmp_path) / "tthf-eval-report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert sorted(i["file"] for i in images) == sorted(name for name, _, _ in FIGURES)
    for image in images:
        assert image["ok"] and image["w"] > 500 and image["h"] > 150, image
    assert shot.stat().st_size > 100_000
