"""The report as a person sees it: a self-contained page, every figure rendered, in headless Chromium.

The browser side is tests/browser.py; the test keeps a full-page screenshot in
``$TTHF_ARTIFACTS`` or ``./artifacts/`` (docs/evaluation.md, "Testing").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import artifacts, needs_chromium, render

from tthf.engine.evaluation.evaluate import evaluate
from tthf.engine.evaluation.report import FIGURES

pytestmark = pytest.mark.slow


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


@needs_chromium
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    shot = artifacts(tmp_path) / "tthf-eval-report.png"
    problems, images, _ = render(report, shot)
    assert problems == []
    assert sorted(i["file"] for i in images) == sorted(name for name, _, _ in FIGURES)
    for image in images:
        assert image["ok"] and image["w"] > 500 and image["h"] > 150, image
    assert shot.stat().st_size > 100_000
