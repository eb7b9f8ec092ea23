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
