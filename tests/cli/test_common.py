"""What every command shares (cli/_common.py): the data root's default rule and the progress display."""

from __future__ import annotations

import importlib
import io
from pathlib import Path
from types import SimpleNamespace

import pytest

from tthf.cli._common import Progress, open_data_from_args, progress
from tthf.engine.store import open_store

#: every command with a data root and the least argv it parses with; the flag that sets the root
WITHOUT_RUN = {
    "train": (["--run", "x"], "--data"),
    "check": (["--dates", "2024"], None),  # the positional DATA
    "synth": ([], "--out"),
    "ingest": (["dbn", "in.dbn"], "--out"),
}
OF_RUN = {
    "run": ["--run", "x", "--dates", "2024"],
    "export": ["--run", "x"],
    "eval": ["--run", "x", "--dates", "2024"],
    "daily": ["--run", "x"],
    "explain": ["--run", "x", "--date", "2024-01-02", "--symbol", "A", "--minute", "10:00"],
}


def _parse(command: str, argv: list[str]):
    return importlib.import_module(f"tthf.cli.{command}").build_parser().parse_args(argv)


def _help(command: str, capsys: pytest.CaptureFixture[str], subcommand: list[str] | None = None) -> str:
    """The command's --help on one line (argparse wraps it at the terminal's width)."""
    with pytest.raises(SystemExit):
        _parse(command, [*(subcommand or []), "--help"])
    return " ".join(capsys.readouterr().out.split())


def _a_run(data_root: Path) -> SimpleNamespace:
    """What open_data_from_args reads of a run: the data root its config.json records."""
    return SimpleNamespace(config=SimpleNamespace(data_root=str(data_root)))


@pytest.mark.parametrize("command", WITHOUT_RUN)
def test_a_command_without_a_run_uses_tthf_data_else_data_market(command, tmp_path, monkeypatch, capsys) -> None:
    argv, flag = WITHOUT_RUN[command]
    monkeypatch.setenv("TTHF_DATA", str(tmp_path / "env"))
    assert open_data_from_args(_parse(command, argv)).uri() == open_store(tmp_path / "env").uri()
    given = [*argv, *([flag] if flag else []), str(tmp_path / "given")]
    assert open_data_from_args(_parse(command, given)).uri() == open_store(tmp_path / "given").uri()
    monkeypatch.delenv("TTHF_DATA")
    monkeypatch.chdir(tmp_path)
    assert open_data_from_args(_parse(command, argv)).uri() == open_store(tmp_path / "data" / "market").uri()
    assert "(default: $TTHF_DATA, else ./data/market)" in _help(
        command, capsys, argv[:1] if command == "ingest" else []
    )


@pytest.mark.parametrize("command", OF_RUN)
def test_a_run_s_command_uses_the_run_s_data_root_not_tthf_data(command, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TTHF_DATA", str(tmp_path / "env"))
    run = _a_run(tmp_path / "trained-on")
    args = _parse(command, OF_RUN[command])
    assert args.data is None  # tthf-run hands None to the library, which applies the same rule
    assert open_data_from_args(args, run).uri() == open_store(tmp_path / "trained-on").uri()
    given = _parse(command, [*OF_RUN[command], "--data", str(tmp_path / "given")])
    assert open_data_from_args(given, run).uri() == open_store(tmp_path / "given").uri()
    assert "(default: the data root recorded in the run's config.json)" in _help(command, capsys)


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so ``Progress`` draws its tqdm bar into it."""

    def isatty(self) -> bool:
        return True


def _dates(stream: io.StringIO) -> Progress[tuple[str, int]]:
    return Progress(
        "dates",
        "date",
        line=lambda step: f"{step[0]}  {step[1]} windows" if step[1] else f"{step[0]}  failed",
        notable=lambda step: step[1] == 0,
        count=("windows", lambda step: step[1]),
        stream=stream,
    )


STEPS = [("2024-01-02", 100), ("2024-01-03", 0), ("2024-01-04", 50)]


def test_off_a_terminal_each_step_is_one_plain_line() -> None:
    log = io.StringIO()
    with _dates(log) as bar:
        bar.start(len(STEPS))
        for step in STEPS:
            bar.step(step)
    assert log.getvalue().splitlines() == ["2024-01-02  100 windows", "2024-01-03  failed", "2024-01-04  50 windows"]
    assert "\r" not in log.getvalue()


def test_on_a_terminal_a_bar_with_the_rate_and_only_notable_steps_written_above_it() -> None:
    screen = Terminal()
    with _dates(screen) as bar:
        bar.start(len(STEPS))
        for step in STEPS:
            bar.step(step)
    text = screen.getvalue()
    assert "\r" in text and "dates: 100%" in text and "3/3" in text and "windows/s" in text
    lines = text.replace("\r", "\n").splitlines()
    assert "2024-01-03  failed" in lines  # notable: a line of its own
    assert "2024-01-02  100 windows" not in lines and "2024-01-04  50 windows" not in lines


def test_without_a_count_the_bar_shows_the_latest_line() -> None:
    screen = Terminal()
    with Progress[str]("synth", "day", line=str, stream=screen) as days:
        days.start(2)
        days.step("2024-01-02  1,000 rows")
        days.step("2024-01-03  2,000 rows\n    warning: second line")
    assert "2024-01-03  2,000 rows" in screen.getvalue() and "warning" not in screen.getvalue()


def test_a_wrapped_list_passes_every_item_and_prints_nothing_off_a_terminal(capsys) -> None:
    assert list(progress(["a", "b"], "read", 2, "file")) == ["a", "b"]
    assert capsys.readouterr().err == ""


def test_a_wrapped_list_counts_its_items_on_a_terminal() -> None:
    screen = Terminal()
    assert list(Progress[str]("read", "file", stream=screen).over(["a", "b", "c"], 3)) == ["a", "b", "c"]
    assert "read: 100%" in screen.getvalue() and "3/3" in screen.getvalue()
