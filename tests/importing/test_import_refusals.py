"""What tthf-import refuses, each with one line that names the file or key and the fix (exit 7, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from user_pipeline import USER_FEATURES, User, user_spec, write_spec

from tthf.cli import import_run as import_cli
from tthf.engine import runs
from tthf.engine.artifacts import Manifest, open_fresh
from tthf.engine.runs import open_run
from tthf.errors import StaleArtifactError
from tthf.export.config import ExportConfig
from tthf.export.importing import import_run, load_spec


def refused(user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, *extra: str) -> str:
    path = user.folder / f"refused-{abs(hash(spec))}.toml"
    path.write_text(spec)
    store = tmp_path / "store"
    code = import_cli.main(["--spec", str(path), "--store", str(store), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 7, err
    assert err.startswith("tthf-import: error: ") and "\n" not in err
    assert not store.exists() or not any(store.rglob("config.json"))
    return err


def test_joblib_needs_trust_pickle_and_then_imports(
    user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(user, tmp_path, capsys, user_spec(user, scalers="scalers.joblib"))
    assert "--trust-pickle" in err and "skops" in err
    spec = write_spec(user, "joblib.toml", scalers="scalers.joblib")
    assert import_cli.main(["--spec", str(spec), "--store", str(tmp_path / "ok"), "--trust-pickle"]) == 0
    joblib_run = open_run(str(tmp_path / "ok"), "jennifer")
    assert json.loads(joblib_run.read_text(runs.IMPORT_RECORD))["sources"]["scalers"]["format"] == "pickle"
    # the same numbers as the skops file: the run (scalers.json, the served graph) is the one the skops
    # import serves end to end in test_import.py
    import_run(load_spec(write_spec(user, "skops.toml")), str(tmp_path / "skops"))
    skops_run = open_run(str(tmp_path / "skops"), "jennifer")
    for key in (runs.SCALERS, runs.IMPORTED_MODEL):
        assert joblib_run.read_bytes(key) == skops_run.read_bytes(key)


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ('output = "returns"', 'output = "return"', "has no output 'return'; its outputs are returns"),
        ('output = "confidence", column = 1', 'output = "confidence", column = 2', "column 2 but output 'confidence'"),
        ('output = "volatility", column = 0', 'output = "volatility"', "is (B, 1); give its column"),
    ],
)
def test_an_output_or_column_the_model_lacks(
    user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expect: str
) -> None:
    spec = user_spec(user)
    assert old in spec
    assert expect in refused(user, tmp_path, capsys, spec.replace(old, new, 1))


def test_an_sklearn_object_that_is_not_a_scaler(user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(np.eye(3), np.arange(3.0))
    sio.dump({"feature_scaler": model, "target_scaler": user.target_scaler}, str(user.folder / "bad.skops"))
    err = refused(user, tmp_path, capsys, user_spec(user, scalers="bad.skops"))
    assert "LinearRegression is not a scaler tthf converts" in err


def test_scaler_names_that_do_not_match(user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [*USER_FEATURES[:-1], "my_own_feature"]
    scaler = {"names": names, "center": [0.0] * len(names), "scale": [1.0] * len(names)}
    target = {"center": [0.0, 0.0], "scale": [1.0, 1.0]}
    (user.folder / "named.json").write_text(json.dumps({"feature_scaler": scaler, "target_scaler": target}))
    err = refused(user, tmp_path, capsys, user_spec(user, scalers="named.json"))
    assert "names do not match features.names" in err and "my_own_feature" in err


def test_a_pt_that_needs_full_unpickling(user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    torch.save({"model": user.model}, str(user.folder / "whole.pt"))  # a pickled module, not tensors
    spec = user_spec(user, model="whole.pt", **{"class": '"hfmodel:ThreeHeadedTransformer"', "code_path": '"."'})
    err = refused(user, tmp_path, capsys, spec)
    assert "needs full unpickling" in err and "weights_only=True" in err and "state_dict()" in err


def test_a_nested_pt_state_dict_imports_with_its_key(user: User, tmp_path: Path) -> None:
    spec = write_spec(
        user,
        "nested.toml",
        model="checkpoint.pt",
        **{
            "class": '"hfmodel:ThreeHeadedTransformer"',
            "code_path": '"."',
            "kwargs": f"{{ input_dim = {len(USER_FEATURES)} }}",
            "state_dict_key": '"model_state_dict"',
        },
    )
    result = import_run(load_spec(spec), str(tmp_path / "store"))
    assert all(r.passed for r in result.results)


def test_a_hand_edited_manifest_and_a_foreign_graph_are_refused(user: User, tmp_path: Path) -> None:
    from tthf.export.api import export_run

    store = str(tmp_path / "store")
    import_run(load_spec(write_spec(user)), store)
    run = open_run(store, "jennifer")
    export_run(run, ExportConfig(real_windows=0, random_batches=(1,)))
    assert open_fresh(run).sources[runs.IMPORTED_MODEL] == run.sha256(runs.IMPORTED_MODEL)
    text = run.read_text(runs.EXPORT_MANIFEST)
    # a hand edit (here: loosening a recorded validation result) breaks the digest
    run.write_text(runs.EXPORT_MANIFEST, text.replace('"passed": true', '"passed": false', 1))
    with pytest.raises(StaleArtifactError, match="edited by hand"):
        open_fresh(run)
    # a foreign graph beside a manifest rewritten consistently (digest recomputed) is still refused
    manifest = Manifest(**{k: v for k, v in json.loads(text).items() if k != "digest"})
    foreign = run.read_bytes(runs.IMPORTED_MODEL) + b" "
    run.write_bytes("export/model.onnx", foreign)
    manifest.add_artifact("model.onnx", foreign, precision="fp32")
    manifest.write(run)
    with pytest.raises(StaleArtifactError, match="does not serve its imported model"):
        open_fresh(run)


def test_a_pt2_with_a_fixed_batch(user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    program = torch.export.export(user.model, (torch.zeros(4, 30, len(USER_FEATURES)),))  # no dynamic_shapes
    torch.export.save(program, str(user.folder / "fixed.pt2"))
    err = refused(user, tmp_path, capsys, user_spec(user, model="fixed.pt2"))
    assert "fixed batch of 4" in err and "dynamic batch axis" in err
