"""The import spec: strict keys, each refusal naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from user_pipeline import User, user_spec

from tthf.errors import ModelImportError
from tthf.export.importing.spec import load_spec


def spec_with(user: User, tmp_path: Path, old: str, new: str) -> Path:
    text = user_spec(user)
    assert old in text
    path = tmp_path / "spec.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_the_users_spec_parses_with_paths_from_its_folder(user: User, tmp_path: Path) -> None:
    path = user.folder / "parsed.toml"
    path.write_text(user_spec(user))
    spec = load_spec(path)
    assert spec.model_path == str(user.folder / "model.pt2") and spec.model_format == "pt2"
    assert spec.scalers_format == "skops" and spec.outputs["ret_1h"].scaler == "target_scaler"
    assert spec.confidence["ret_conf"].kind == "score" and spec.confidence["vol_conf"].band == pytest.approx(0.2231)


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("seq_len = 30", "seq_len = 30\nepochs = 3", r"\[model\] unknown key\(s\) \['epochs'\]"),
        ('path = "model.pt2"', 'path = "model.ts"', "unknown extension '.ts'"),
        ('path = "model.pt2"', 'path = "model.safetensors"', "is a state dict; name the class"),
        (
            "[features]",
            "[labels]\nret_1h = 'x'\n\n[features]",
            r"\[labels\] are columns of the feature files: add \[features.columns\]",
        ),
        (
            'names = ["',
            'names = ["my_feature", "',
            r"computed \['my_feature'\] are not features tthf computes.*\[features.columns\]",
        ),
        ('space = "log"', 'space = "linear"', "tthf scores vol_conf's band in 'log' space"),
        ('column = 0, scaler = "target_scaler"', 'column = 0, scale = 2.0, scaler = "target_scaler"', "not both"),
        ('ret_conf = { output = "confidence", column = 0 }\n', "", r"\[outputs\] missing key\(s\) \['ret_conf'\]"),
    ],
)
def test_refusals_name_the_key(user: User, tmp_path: Path, old: str, new: str, expect: str) -> None:
    with pytest.raises(ModelImportError, match=expect):
        load_spec(spec_with(user, tmp_path, old, new))


def test_a_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(ModelImportError, match="no such spec file"):
        load_spec(tmp_path / "nowhere.toml")


def files_text(user: User, tmp_path: Path, extra: str = "", *, fill: str = "ffill_then_zero") -> str:
    from user_pipeline import files_spec

    return files_spec(user, tmp_path / "features", extra=extra).replace('fill = "ffill_then_zero"', f'fill = "{fill}"')


def golden(change: str) -> str:
    """A [golden] section with one key replaced by ``change``, put before [labels]."""
    keys = {"path": '"{date}.csv"', "mode": '"dense"', "dates": '["2024-01-03"]', "columns": '{ ret_1h = "p" }'}
    key = change.split(" =")[0]
    lines = [change if k == key else f"{k} = {v}" for k, v in keys.items()]
    return "[golden]\n" + "\n".join(lines) + "\n\n[labels]"


def test_a_feature_files_spec_parses_into_the_runs_source(user: User, tmp_path: Path) -> None:
    from user_pipeline import FILE_NAMES

    path = tmp_path / "files.toml"
    path.write_text(files_text(user, tmp_path, "\n" + golden('path = "inf/{date}.csv"').removesuffix("[labels]")))
    spec = load_spec(path)
    files = spec.feature_files
    assert files is not None and files.columns == FILE_NAMES and spec.computed == []
    assert files.root == str(tmp_path / "features") and files.labels == {
        "ret_1h": "fwd_ret_60m",
        "vol_10m": "fwd_vol_10m",
    }
    assert (
        spec.golden is not None and spec.golden.path == str(tmp_path / "inf/{date}.csv") and spec.golden.mode == "dense"
    )


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ('fill = "ffill_then_zero"', 'fill = "mean"', r"features.fill 'mean'; use one of"),
        ('timezone = "UTC"', 'timezone = "Mars/Olympus"', r"timezone 'Mars/Olympus' is not a time zone"),
        ('path = "{date}.parquet"', 'path = "features.parquet"', r"one \{date\} ending in .parquet"),
        ('ts = "ts"\ntimezone', 'stamp = "ts"\ntimezone', r"\[features.columns\] unknown key\(s\) \['stamp'\]"),
        ('ret_1h = "fwd_ret_60m"', 'ret_conf = "fwd_ret_60m"', r"\[labels\] unknown key\(s\) \['ret_conf'\]"),
        ("[labels]", golden('path = "x.csv"'), r"golden.path 'x.csv' needs \{date\}"),
        ("[labels]", golden('mode = "hourly"'), r"golden.mode 'hourly'"),
        ("[labels]", golden('dates = ["3 March"]'), r"golden.dates '3 March' is not a date"),
        ("[labels]", golden('columns = { price = "p" }'), r"\[golden.columns\] unknown key\(s\) \['price'\]"),
    ],
)
def test_feature_file_refusals_name_the_key(user: User, tmp_path: Path, old: str, new: str, expect: str) -> None:
    text = files_text(user, tmp_path)
    assert old in text
    path = tmp_path / "spec.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ModelImportError, match=expect):
        load_spec(path)


def test_computed_names_must_be_tthfs_and_mixed_runs_need_raw_bars(user: User, tmp_path: Path) -> None:
    from tthf.export.importing import import_run

    path = user.folder / "mixed_without_raw.toml"
    text = files_text(user, tmp_path).replace('fill = "ffill_then_zero"', 'fill = "zero"\ncomputed = ["my_ret_1"]')
    path.write_text(text)
    with pytest.raises(ModelImportError, match=r"computed \['my_ret_1'\] are not features tthf computes"):
        load_spec(path)
    path.write_text(text.replace('computed = ["my_ret_1"]', 'computed = ["ret_15"]'))
    with pytest.raises(
        ModelImportError, match=r"features \['ret_15'\] are computed from raw bars: give \[data\] raw_root"
    ):
        import_run(load_spec(path), str(tmp_path / "store"))
