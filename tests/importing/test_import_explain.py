"""tthf-explain and tthf-eval --explain on an ONNX-only import: occlusion through the served graph, no attention."""

from __future__ import annotations

import numpy as np
import pytest
from user_pipeline import USER_FEATURES, User, write_spec

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.explain.forecasts import explain_forecasts
from tthf.engine.explain.samples import Sampling
from tthf.engine.explain.section import explain_dates
from tthf.engine.runs import open_run
from tthf.engine.store import open_store
from tthf.engine.testing import DAYS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def imported(user: User, tmp_path_factory: pytest.TempPathFactory):
    from tthf.export.importing import import_run, load_spec

    store = tmp_path_factory.mktemp("imported")
    import_run(load_spec(write_spec(user)), str(store))
    return open_run(str(store), "jennifer")


def test_an_onnx_only_import_is_explained_by_occlusion_through_its_graph(imported, user: User) -> None:
    data = open_store(str(user.data))
    out = explain_forecasts(imported, data, DAYS[2], _first_symbol(user), ["11:00", "13:00"])
    attr = out.attributions
    assert attr.method == "occlusion" and out.completeness["checked"] is False
    assert attr.cells["ret_1h"].shape == (2, 30, len(USER_FEATURES)) and out.feature_names == USER_FEATURES
    assert all(np.abs(attr.cells[n]).max() > 0 for n in OUTPUT_NAMES)


def _first_symbol(user: User) -> list[str]:
    from tthf.engine.data.marketdata import read_day

    return [str(read_day(str(user.data), DAYS[2])["symbol"].min())]


def test_the_eval_section_of_an_import_says_why_attention_is_absent(imported, user: User) -> None:
    section = explain_dates(imported, open_store(str(user.data)), [DAYS[2].isoformat()], Sampling(minute_step=60))
    assert section["attention"]["available"] is False and "no PyTorch source" in section["attention"]["reason"]
    assert {r["name"] for r in section["feature"]} == set(USER_FEATURES)
    assert len(section["lag"]) == 30
