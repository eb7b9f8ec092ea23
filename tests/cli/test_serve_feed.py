"""tthf-serve's and tthf-feed's own argument rules: the pace, and where the token comes from (never argv)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tthf.cli import feed, serve
from tthf.errors import UsageError


def test_the_pace_is_a_positive_factor_or_max() -> None:
    assert feed.speed_from_arg("60x") == 60.0 and feed.speed_from_arg("390") == 390.0
    assert feed.speed_from_arg("max") is None
    for wrong in ("0x", "-5x", "fast"):
        with pytest.raises(UsageError, match="--speed"):
            feed.speed_from_arg(wrong)


def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = serve.build_parser()
    monkeypatch.delenv(serve.TOKEN_ENV, raising=False)
    assert serve.token_from_args(parser.parse_args(["--run", "x"])) is None
    monkeypatch.setenv(serve.TOKEN_ENV, "from-env")
    assert serve.token_from_args(parser.parse_args(["--run", "x"])) == "from-env"
    (tmp_path / "token").write_text("from-file\n")
    assert (
        serve.token_from_args(parser.parse_args(["--run", "x", "--token-file", str(tmp_path / "token")])) == "from-file"
    )
    with pytest.raises(UsageError, match="--token-file"):
        serve.token_from_args(parser.parse_args(["--run", "x", "--token-file", str(tmp_path / "none")]))
    assert "--token" not in parser._option_string_actions  # no flag puts the token itself on the command line
    assert parser.parse_args(["--run", "x"]).host == "127.0.0.1"


def test_feed_replays_data_or_a_runs_own_inputs_one_of_them(capsys: pytest.CaptureFixture[str]) -> None:
    to = ["--date", "2024-01-03", "--to", "grpc://127.0.0.1:1"]
    for args in (to, ["data/market", "--run", "jennifer", *to]):
        assert feed.main(args) == 2
        assert "give DATA (a data root of raw bars) or --run NAME" in capsys.readouterr().err
