"""The user's scalers -> plain numbers: each sklearn scaler and JSON, equal to sklearn's own transform."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tthf.errors import ModelImportError
from tthf.export.importing.scalers import Affine, feature_scalers, load_scalers
from tthf.export.importing.spec import ImportSpec, OutputMap

NAMES = ("ret_1", "spread_bps", "rv_5")
ROWS = np.random.default_rng(0).standard_normal((200, 3)) * [1e-3, 5.0, 2e-3] + [0.0, 10.0, 1e-3]


def spec(path: Path, fmt: str) -> ImportSpec:
    outputs = {n: OutputMap("y", 0) for n in ("ret_1h", "vol_10m", "ret_conf", "vol_conf")}
    outputs["ret_1h"] = OutputMap("y", 0, scaler="target", index=1)
    return ImportSpec(
        source="spec.toml",
        experiment="e",
        model_type="m",
        run_id="r",
        model_path="m.onnx",
        model_format="onnx",
        feature_names=NAMES,
        scalers_path=str(path),
        scalers_format=fmt,
        outputs=outputs,
        confidence={},
        scalers_key="features",
    )


@pytest.mark.parametrize("kind", ["StandardScaler", "RobustScaler", "MinMaxScaler", "MaxAbsScaler"])
def test_each_known_sklearn_scaler_scales_as_sklearn_does(tmp_path: Path, kind: str) -> None:
    import skops.io as sio
    from sklearn import preprocessing

    scaler = getattr(preprocessing, kind)().fit(ROWS)
    target = preprocessing.StandardScaler().fit(ROWS[:, :2] * 100)
    sio.dump({"features": scaler, "target": target}, str(tmp_path / "s.skops"))
    scalers, outputs, _ = load_scalers(spec(tmp_path / "s.skops", "skops"), trust_pickle=False)
    got = scalers.transform(ROWS.astype(np.float32), NAMES, NAMES)
    np.testing.assert_allclose(got, scaler.transform(ROWS), rtol=1e-5, atol=1e-5)
    assert math.isinf(scalers.clip)  # sklearn never clips
    # the target's inverse, value * scale_[1] + mean_[1], as numbers
    assert outputs["ret_1h"].scale == pytest.approx(target.scale_[1])
    assert outputs["ret_1h"].offset == pytest.approx(target.mean_[1])


def test_a_json_scaler_with_names_is_matched_by_name_and_keeps_its_clip(tmp_path: Path) -> None:
    doc = {
        "features": {
            "names": list(NAMES[::-1]),
            "center": [3.0, 2.0, 1.0],
            "scale": [6.0, 4.0, 2.0],
            "clip": [5, 5, 5],
        },
        "target": {"center": [0.0, 0.5], "scale": [1.0, 0.25]},
    }
    (tmp_path / "s.json").write_text(json.dumps(doc))
    scalers, outputs, _ = load_scalers(spec(tmp_path / "s.json", "json"), trust_pickle=False)
    assert scalers.names == NAMES and list(scalers.mean) == [1.0, 2.0, 3.0] and list(scalers.std) == [2.0, 4.0, 6.0]
    assert scalers.clip == 5.0 and (outputs["ret_1h"].scale, outputs["ret_1h"].offset) == (0.25, 0.5)
    doc["features"]["clip"] = [5, 4, 5]
    (tmp_path / "s.json").write_text(json.dumps(doc))
    with pytest.raises(ModelImportError, match="per-feature clips that differ"):
        load_scalers(spec(tmp_path / "s.json", "json"), trust_pickle=False)


def test_a_scaler_without_names_needs_one_column_per_feature() -> None:
    with pytest.raises(ModelImportError, match="has 2 columns but features.names lists 3"):
        feature_scalers(Affine(np.zeros(2), np.ones(2)), NAMES, "s.json")
    with pytest.raises(ModelImportError, match="positive finite scales"):
        feature_scalers(Affine(np.zeros(3), np.array([1.0, 0.0, 1.0])), NAMES, "s.json")


def test_a_clipping_minmax_scaler_and_a_missing_entry_are_refused(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.preprocessing import MinMaxScaler

    sio.dump({"features": MinMaxScaler(clip=True).fit(ROWS)}, str(tmp_path / "c.skops"))
    with pytest.raises(ModelImportError, match="clip=True"):
        load_scalers(spec(tmp_path / "c.skops", "skops"), trust_pickle=False)
    sio.dump({"features": MinMaxScaler().fit(ROWS)}, str(tmp_path / "m.skops"))
    with pytest.raises(ModelImportError, match="no entry 'target'"):
        load_scalers(spec(tmp_path / "m.skops", "skops"), trust_pickle=False)


class Unknown:
    """A class skops does not trust: the audit refuses the file before anything of it is loaded."""

    def __init__(self) -> None:
        self.value = 1


def test_skops_types_are_audited_before_loading(tmp_path: Path) -> None:
    import skops.io as sio

    sio.dump({"features": Unknown()}, str(tmp_path / "u.skops"))
    with pytest.raises(ModelImportError, match=r"types tthf does not load: \['test_import_scalers.Unknown'\]"):
        load_scalers(spec(tmp_path / "u.skops", "skops"), trust_pickle=False)
