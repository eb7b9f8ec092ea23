"""``[labels]`` checked at import (present and numeric in the files of the held-out dates), and the spec's
``features.groups`` recorded and used as the explanations' families."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from test_import_refusals import refused
from user_pipeline import FILE_NAMES, HOLEY_DAY, User, files_spec, write_feature_root

from tthf.engine.testing import DAYS


@pytest.fixture(scope="module")
def features(user: User, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_feature_root(user, tmp_path_factory.mktemp("labels") / "features")


def test_a_label_column_missing_from_the_files_is_refused_at_import(
    user: User, features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = files_spec(user, features).replace('ret_1h = "fwd_ret_60m"', 'ret_1h = "fwd_ret_60"')
    err = refused(user, tmp_path, capsys, spec)
    assert f"{features / f'{DAYS[1]}.parquet'}: [labels] ret_1h = 'fwd_ret_60' is not a column of the file" in err
    assert "set [labels] ret_1h to the file's column of realized ret_1h" in err


def test_a_label_column_that_is_not_a_number_on_a_held_out_date_is_refused_at_import(
    user: User, features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "features"
    shutil.copytree(features, root)
    path = root / f"{HOLEY_DAY}.parquet"  # the second held-out date; the first is fine
    pl.read_parquet(path).with_columns(pl.col("fwd_vol_10m").cast(pl.String)).write_parquet(path)
    err = refused(user, tmp_path, capsys, files_spec(user, root))
    assert f"{path}: [labels] vol_10m = 'fwd_vol_10m' has type" in err and "expected a number" in err
    assert "name a numeric column in [labels] vol_10m" in err


def test_groups_naming_a_feature_the_model_does_not_read_are_refused(
    user: User, features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    groups = f'groups = {{ {FILE_NAMES[0]} = "spread", my_typo = "spread" }}\n'
    spec = files_spec(user, features).replace('fill = "ffill_then_zero"\n', f'fill = "ffill_then_zero"\n{groups}')
    err = refused(user, tmp_path, capsys, spec)
    assert "features.groups names ['my_typo'], which are not in features.names" in err


@pytest.mark.slow
def test_a_grouped_import_records_its_groups_and_its_explanations_report_them_as_families(
    user: User, features: Path
) -> None:
    from tthf.engine.explain.importance import OTHER_FAMILY
    from tthf.engine.explain.samples import Sampling
    from tthf.engine.explain.section import explain_dates
    from tthf.engine.runs import open_run
    from tthf.engine.store import open_store
    from tthf.export.importing import import_run, load_spec

    groups = {FILE_NAMES[0]: "book", FILE_NAMES[1]: "book", FILE_NAMES[12]: "returns"}
    line = "groups = { " + ", ".join(f'{k} = "{v}"' for k, v in groups.items()) + " }\n"
    path = user.folder / "grouped.toml"
    path.write_text(
        files_spec(user, features).replace('fill = "ffill_then_zero"\n', f'fill = "ffill_then_zero"\n{line}')
    )
    store = features.parent / "store"
    import_run(load_spec(path), str(store))
    run = open_run(str(store), "jennifer")  # groups recorded in config.json
    assert run.config.imported is not None and run.config.imported.groups == groups
    # tthf-eval --explain's section on the file-only run (inputs and labels from the files)
    section = explain_dates(run, open_store(run.config.data_root), [str(DAYS[1])], Sampling(minute_step=60))
    families = section["families"]
    assert families["book"] == FILE_NAMES[:2] and families["returns"] == [FILE_NAMES[12]]
    assert families[OTHER_FAMILY] == FILE_NAMES[2:10]  # the user's own names that no group names
    assert sum(map(len, families.values())) == len(FILE_NAMES)
    assert {"book", "returns", OTHER_FAMILY} <= {r["name"] for r in section["family"]}
    assert {r["name"] for r in section["family"]} == set(families)
