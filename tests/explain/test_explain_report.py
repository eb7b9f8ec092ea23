"""tthf-eval --explain end to end: metrics.json's section and the report's, rendered in headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from browser import artifacts, needs_chromium, render

from tthf.engine.evaluation import explain_report, report
from tthf.engine.evaluation.evaluate import EvalResult, evaluate_run
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import RunOptions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(trained, trained_section) -> EvalResult:
    """The held-out dates evaluated with the section (computed once for the session on the same dates)."""
    spec = f"{trained.test[0]}:{trained.test[-1]}"
    run_inference(trained.run, RunOptions(dates=spec, dense=True, backend="torch"))

    def explain(dates: list[str]) -> dict:
        assert dates == trained.test
        return trained_section

    return evaluate_run(trained.run, spec, name="explained", explain=explain)


def test_metrics_json_holds_the_section(evaluated: EvalResult) -> None:
    folder = Path(evaluated.uri)
    saved = json.loads((folder / "metrics.json").read_text())["explain"]
    assert saved["sampling"]["text"] == "every 30th forecast minute, every symbol"
    assert [r["name"] for r in saved["lag"]] == [str(j) for j in range(30)]
    assert {r["name"] for r in saved["family"]} == set(saved["families"]) and saved["attention"]["available"]
    assert saved["seconds_per_date"] > 0
    for name, _, _ in explain_report.FIGURES:
        assert (folder / name).stat().st_size > 5_000


def test_the_page_has_the_section_and_its_figures(evaluated: EvalResult) -> None:
    page = (Path(evaluated.uri) / "report.html").read_text()
    assert "<h2>What the model looks at</h2>" in page and "every 30th forecast minute" in page
    expected = len(report.FIGURES) + len(explain_report.FIGURES)
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == expected


def test_no_section_without_explain() -> None:
    assert explain_report.figures({}) == {} and explain_report.section({}, {}) == ""


@needs_chromium
def test_report_with_explanations_renders_in_headless_chromium(evaluated: EvalResult, tmp_path: Path) -> None:
    shot = artifacts(tmp_path) / "tthf-eval-explain-report.png"
    problems, images, _ = render(Path(evaluated.uri) / "report.html", shot)
    assert problems == []
    names = [name for name, _, _ in (*report.FIGURES, *explain_report.FIGURES)]
    assert sorted(i["file"] for i in images) == sorted(names)
    for image in images:
        assert image["ok"] and image["w"] > 500 and image["h"] > 150, image


def test_tthf_eval_explain_samples_as_told(trained, evaluated: EvalResult) -> None:
    """The command on the dates ``evaluated`` predicted."""
    from tthf.cli import eval as eval_cli

    store = str(Path(trained.run.ref.uri).parents[2])
    spec = f"{trained.test[-1]}:{trained.test[-1]}"
    argv = ["--run", "jennifer", "--store", store, "--dates", spec, "--name", "cli", "--explain"]
    assert eval_cli.main([*argv, "--explain-minute-step", "60", "--explain-symbols", "12"]) == 0
    saved = json.loads((Path(trained.run.ref.uri) / "evaluation" / "cli" / "metrics.json").read_text())["explain"]
    assert saved["sampling"]["text"] == "every 60th forecast minute, at most 12 symbols (seed 0)"
    assert saved["sampling"]["windows_per_date"][0] <= 12 * 7
    assert eval_cli.main([*argv, "--explain-symbols", "2"]) == 2  # too few for a cross-sectional IC
