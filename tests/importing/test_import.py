"""tthf-import end to end: each model format and scaler format in, a run that every command serves out."""

from __future__ import annotations

import json

from user_pipeline import USER_FEATURES, User, write_spec

from tthf.engine import runs
from tthf.engine.runs import open_run
from tthf.export.importing import import_run, load_spec


def test_pt2_with_skops_scalers_becomes_a_run(user: User, tmp_path) -> None:
    result = import_run(load_spec(write_spec(user)), str(tmp_path / "store"))
    run = open_run(str(tmp_path / "store"), "jennifer")
    assert run.config.source == "import" and run.config.imported is not None
    assert run.config.feature_names == USER_FEATURES
    record = json.loads(run.read_text(runs.IMPORT_RECORD))
    assert record["sources"]["model"]["format"] == "pt2"
    assert all(r.passed for r in result.results)
    assert any(r.inputs.startswith("heldout") for r in result.results)
