"""A user who trained elsewhere: their network (``hfmodel``), their scalers, their files and their own script.

``user`` writes what such a pipeline leaves behind, once per session: the model as a
``torch.export`` program (``model.pt2``), as ONNX, as a state dict (``.safetensors`` and a
``checkpoint.pt`` that nests it under ``model_state_dict``), and a dict of sklearn
``StandardScaler``s (features and targets) as skops and as joblib. The model reads 20 of
tthf's features in its own order; its outputs are target-scaled. ``reference`` is the
user's own inference script: tthf's features of a date, their scaler, their model, their
inverse target scaling: what an imported run's predictions must equal.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tthf.engine import windows
from tthf.engine.data.marketdata import read_day
from tthf.engine.features import FEATURE_NAMES, build_day
from tthf.engine.testing import DAYS, make_data

HERE = Path(__file__).resolve().parent
#: 20 of tthf's 59 features, in the user's own order
USER_FEATURES = [FEATURE_NAMES[i] for i in (34, 0, 1, 24, 25, 13, 57, 58, 39, 40, 2, 29, 44, 48, 50, 14, 26, 36, 11, 5)]
SEQ_LEN = 30


@dataclass
class User:
    folder: Path
    data: Path
    model: object  # the torch network (eval mode)
    feature_scaler: object
    target_scaler: object


def user_spec(
    user: User, *, model: str = "model.pt2", scalers: str = "scalers.skops", extra: str = "", **model_keys: str
) -> str:
    """A spec as docs/import.md shows; ``model_keys`` add TOML lines to [model]."""
    lines = "\n".join(f"{k} = {v}" for k, v in model_keys.items())
    return f"""
[run]
experiment = "intraday_tth"
model_type = "three_headed_transformer"
run_id = "jennifer_20250214"

[model]
path = "{model}"
seq_len = {SEQ_LEN}
sample_every = 10
{lines}

[outputs]
ret_1h = {{ output = "returns", column = 0, scaler = "target_scaler", index = 0 }}
vol_10m = {{ output = "volatility", column = 0, scaler = "target_scaler", index = 1 }}
ret_conf = {{ output = "confidence", column = 0 }}
vol_conf = {{ output = "confidence", column = 1 }}

[confidence]
ret_conf = {{ kind = "score" }}
vol_conf = {{ kind = "band", band = 0.2231, space = "log" }}

[features]
names = {USER_FEATURES!r}

[scalers]
path = "{scalers}"
key = "feature_scaler"

[data]
raw_root = "{user.data}"
train_dates = "{DAYS[0]}"
heldout_dates = "{DAYS[1]}:{DAYS[2]}"
{extra}
""".replace("'", '"')


def write_spec(user: User, name: str = "spec.toml", **kwargs: str) -> Path:
    path = user.folder / name
    path.write_text(user_spec(user, **kwargs))
    return path


@pytest.fixture(scope="session")
def user(tmp_path_factory: pytest.TempPathFactory) -> User:
    return make_user(tmp_path_factory.mktemp("user"))


def make_user(folder: Path, n_symbols: int = 3) -> User:
    """The user's files in ``folder``, over a synthetic market of ``n_symbols`` (the benchmark makes a bigger one)."""
    import joblib
    import safetensors.torch
    import skops.io as sio
    import torch
    from sklearn.preprocessing import StandardScaler

    sys.path.insert(0, str(HERE))
    from hfmodel import ThreeHeadedTransformer

    data = make_data(folder / "market", n_symbols=n_symbols)
    day = build_day(read_day(str(data), DAYS[0]), DAYS[0])
    cols = [day.feature_names.index(n) for n in USER_FEATURES]
    rows = day.features[day.mask][:, cols].astype(np.float64)
    feature_scaler = StandardScaler().fit(rows)  # fitted on a numpy array: no feature_names_in_
    labels = day.labels[day.mask]
    labels = labels[np.isfinite(labels).all(axis=1)]
    target_scaler = StandardScaler().fit(np.stack([labels[:, 0], np.sqrt(labels[:, 1])], axis=1))
    torch.manual_seed(7)
    model = ThreeHeadedTransformer(input_dim=len(USER_FEATURES)).eval()
    x = torch.zeros(4, SEQ_LEN, len(USER_FEATURES))
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "model.pt2"))
    onnx_program = torch.onnx.export(
        model,
        (x,),
        dynamo=True,
        input_names=["x"],
        output_names=["returns", "volatility", "confidence"],
        dynamic_shapes=({0: batch},),
    )
    assert onnx_program is not None
    onnx_program.save(str(folder / "model.onnx"))
    safetensors.torch.save_file(model.state_dict(), str(folder / "model.safetensors"))
    torch.save({"model_state_dict": model.state_dict(), "epoch": 12}, str(folder / "checkpoint.pt"))
    scalers = {"feature_scaler": feature_scaler, "target_scaler": target_scaler}
    sio.dump(scalers, str(folder / "scalers.skops"))
    joblib.dump(scalers, str(folder / "scalers.joblib"))
    return User(folder, data, model, feature_scaler, target_scaler)


def reference(user: User, day: dt.date, stride: int = 1, *, swap: bool = False) -> dict[str, np.ndarray]:
    """The user's own script for ``day``: every valid window (every ``stride``-th), in (symbol, minute) order.

    ``swap`` feeds the first two features in each other's place: a wrong input, which the
    comparison with tthf's predictions must catch.

    Returns ``symbol``, ``ts`` and the four forecasts: the model on the user-scaled windows,
    returns and volatility through the target scaler's inverse, confidences as they are.
    """
    import torch

    feats = build_day(read_day(str(user.data), day), day)
    order = [USER_FEATURES[1], USER_FEATURES[0], *USER_FEATURES[2:]] if swap else USER_FEATURES
    cols = [feats.feature_names.index(n) for n in order]
    raw = feats.features[..., cols].astype(np.float64)
    s, m, f = raw.shape
    scaled = user.feature_scaler.transform(raw.reshape(-1, f)).reshape(s, m, f).astype(np.float32)
    sym, minute = windows.window_positions(feats.mask, SEQ_LEN, stride)
    x = np.stack([scaled[a, b - SEQ_LEN + 1 : b + 1] for a, b in zip(sym, minute)])
    with torch.inference_mode():
        out = user.model(torch.from_numpy(x))
    targets = user.target_scaler.inverse_transform(
        np.concatenate([out["returns"].numpy(), out["volatility"].numpy()], axis=1).astype(np.float64)
    )
    conf = out["confidence"].numpy()
    return {
        "symbol": np.asarray(feats.symbols)[sym],
        "ts": np.asarray(feats.minutes)[minute],
        "ret_1h": targets[:, 0],
        "vol_10m": targets[:, 1],
        "ret_conf": conf[:, 0],
        "vol_conf": conf[:, 1],
    }


def load_bytes(path: Path) -> io.BytesIO:
    return io.BytesIO(path.read_bytes())
