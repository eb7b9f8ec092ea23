"""tthf-eval as a user runs it: a real process on a tiny real run, progress, summary, exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tthf.cli.eval import main
from tthf.engine.testing import DAYS

pytestmark = pytest.mark.slow


def test_command_scores_and_prints_the_summary_and_the_report_path(tiny_run) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tthf.cli.eval",
            "--run",
            "jen",
            "--dates",
            f"{DAYS[0]}:{DAYS[2]}",
            "--store",
            tiny_run.store,
            "--name",
            "cli",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    assert "2024-01-02  no_predictions" in proc.stderr and "2024-01-03  scored" in proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("evaluation cli of demo/three_headed_transformer/jennifer: 2 dates scored, 1 without")
    assert any(line.startswith("ret_1h   IC ") for line in out) and any(
        line.startswith("vol_10m  QLIKE pooled ") for line in out
    )
    assert any(re.match(r" +dates the model's QLIKE is lower: vs last RV [0-2]/2, EWMA [0-2]/2", line) for line in out)
    report = out[-1].removeprefix("report: ")
    assert report.endswith("jennifer/evaluation/cli/report.html") and Path(report).is_file()


def test_errors_are_one_line_with_their_exit_code(tiny_run, capsys) -> None:
    assert main(["--run", "nobody", "--dates", "2024", "--store", tiny_run.store]) == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("tthf-eval: error: no run matches 'nobody'") and "\n" not in err
    assert main(["--run", "jennifer", "--dates", str(DAYS[0]), "--store", tiny_run.store]) == 4
    assert "no predictions to score" in capsys.readouterr().err
    assert main(["--run", "jennifer", "--dates", "2024-13", "--store", tiny_run.store]) == 2
    assert "'2024-13' is not a valid date" in capsys.readouterr().err


def test_help_explains_dates_and_outputs(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--dates" in text and "report.html" in text and "source_ts" in text
