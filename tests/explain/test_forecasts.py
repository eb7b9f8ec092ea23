"""tthf-explain on a trained run: the library function, its files and the command's output."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tthf.cli import explain as explain_cli
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.explain.forecasts import explain_forecasts
from tthf.engine.store import open_store
from tthf.errors import UsageError

pytestmark = pytest.mark.slow


def symbols(trained) -> list[str]:
    from tthf.engine.evaluation.realized import realized_day

    return realized_day(open_store(trained.data), dt.date.fromisoformat(trained.test[-1])).symbols[:2]


def test_several_forecasts_in_one_call(trained, tmp_path: Path) -> None:
    day = dt.date.fromisoformat(trained.test[-1])
    names = symbols(trained)
    out = explain_forecasts(
        trained.run, open_store(trained.data), day, names, ["10:30", "14:00"], open_store(str(tmp_path))
    )
    assert [(f.symbol, f.minute) for f in out.forecasts] == [(s, m) for s in names for m in ("10:30", "14:00")]
    assert out.forecasts[0].ts == f"{day}T15:30:00Z"  # 10:30 New York in January is 15:30 UTC
    assert out.attributions.method == "integrated gradients" and out.completeness["ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{day}_{s}_{m}.png" for s in names for m in ("1030", "1400")] + [f"{day}_explain.json"]
    )
    saved = json.loads((tmp_path / f"{day}_explain.json").read_text())
    top = saved["forecasts"][0]["top"]["ret_1h"]
    assert len(top) == 10 and set(saved["forecasts"][0]["outputs"]) == set(OUTPUT_NAMES)
    assert abs(top[0][2]) >= abs(top[-1][2])


def test_a_forecast_that_does_not_exist_is_named(trained) -> None:
    day = dt.date.fromisoformat(trained.test[-1])
    data = open_store(trained.data)
    name = symbols(trained)[0]
    with pytest.raises(UsageError, match="'NOPE' has no rows"):
        explain_forecasts(trained.run, data, day, ["NOPE"], ["10:30"])
    with pytest.raises(UsageError, match="'17:30' is not a minute"):
        explain_forecasts(trained.run, data, day, [name], ["17:30"])
    with pytest.raises(UsageError, match="09:40 .* has no forecast: its 30 minutes"):
        explain_forecasts(trained.run, data, day, [name], ["09:40"])


def test_the_command_prints_top_cells_and_json(trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = symbols(trained)[0]
    store = str(Path(trained.run.ref.uri).parents[2])
    argv = ["--run", "jennifer", "--store", store, "--date", trained.test[-1], "--symbol", name, "--minute", "11:00"]
    assert explain_cli.main([*argv, "--out", str(tmp_path), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert f"{name} 11:00" in text and "completeness holds" in text and text.count("top: ") == 4
    assert explain_cli.main([*argv, "--out", str(tmp_path), "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["method"] == "integrated gradients" and parsed["forecasts"][0]["symbol"] == name
