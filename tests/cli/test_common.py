"""What every command shares (cli/_common.py): the progress display."""

from __future__ import annotations

import io

from tthf.cli._common import Progress, progress


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
