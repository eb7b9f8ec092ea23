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
import polars as pl
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


#: the user's own names in their feature files: 10 of their own (``my_...``), 10 named as tthf's, in the model's order
FILE_NAMES = [f"my_{n}" if i < 10 else n for i, n in enumerate(USER_FEATURES)]
#: the two columns with about 2% nulls on every date
NULL_COLUMNS = (FILE_NAMES[3], FILE_NAMES[15])
#: the date whose files hold a late-starting symbol and a missing minute (every other date is complete)
HOLEY_DAY = DAYS[2]
LATE_START = 45  # the second symbol's first row is at this session minute of HOLEY_DAY
GAP_MINUTE = 100  # the third symbol has no row at this session minute of HOLEY_DAY
LABEL_COLUMNS = {"ret_1h": "fwd_ret_60m", "vol_10m": "fwd_vol_10m"}
GOLDEN_COLUMNS = {
    "ret_1h": "pred_return",
    "vol_10m": "pred_volatility",
    "ret_conf": "return_confidence",
    "vol_conf": "volatility_confidence",
}


def feature_frame(user: User, day: dt.date, *, holes: bool) -> pl.DataFrame:
    """The user's feature file of ``day``: symbol, ts (UTC), FILE_NAMES (tthf's values of USER_FEATURES, as the
    user's pipeline would have them), two label columns; nulls in NULL_COLUMNS, and with ``holes`` a symbol
    that starts late and a missing minute."""
    feats = build_day(read_day(str(user.data), day), day)
    s, m = len(feats.symbols), len(feats.minutes)
    cols = [feats.feature_names.index(n) for n in USER_FEATURES]
    values = feats.features[..., cols].reshape(s * m, -1)
    rng = np.random.default_rng(day.toordinal())
    data = {name: values[:, i].astype(np.float64) for i, name in enumerate(FILE_NAMES)}
    for name in NULL_COLUMNS:
        data[name] = np.where(rng.random(s * m) < 0.02, np.nan, data[name])
    frame = pl.DataFrame(
        {
            "symbol": np.repeat(feats.symbols, m),
            "ts": pl.Series(np.tile(feats.minutes, s)).dt.replace_time_zone("UTC"),
            **data,
            "fwd_ret_60m": feats.labels[..., 0].reshape(-1).astype(np.float64),
            "fwd_vol_10m": feats.labels[..., 1].reshape(-1).astype(np.float64),
        }
    ).with_columns(pl.col(n).fill_nan(None) for n in [*NULL_COLUMNS, "fwd_ret_60m", "fwd_vol_10m"])
    if holes:
        minute = pl.int_range(pl.len()).over("symbol")
        late = (pl.col("symbol") == feats.symbols[1]) & (minute < LATE_START)
        gap = (pl.col("symbol") == feats.symbols[2]) & (minute == GAP_MINUTE)
        frame = frame.filter(~(late | gap))
    return frame


def write_feature_root(user: User, root: Path, *, layout: str = "{date}.parquet") -> Path:
    """The user's daily feature files of DAYS under ``root`` (HOLEY_DAY with its holes)."""
    for day in DAYS:
        path = root / layout.replace("{date}", day.isoformat()).replace("*", "part-0")
        path.parent.mkdir(parents=True, exist_ok=True)
        feature_frame(user, day, holes=day == HOLEY_DAY).write_parquet(path)
    return root


def user_predict(user: User, frame: pl.DataFrame, stride: int = 1) -> pl.DataFrame:
    """The user's own inference script on one feature file: it counts rows, not minutes.

    Sort by symbol and ts, forward-fill per symbol then 0, their scaler, windows of SEQ_LEN
    rows per symbol (dense: every row from the SEQ_LEN-th; sparse: every ``stride``-th row
    from there, forward-filled to every row), their model, the target scaler's inverse.
    """
    import torch

    frame = frame.sort("symbol", "ts").with_columns(pl.col(FILE_NAMES).forward_fill().over("symbol").fill_null(0.0))
    scaled = user.feature_scaler.transform(frame.select(FILE_NAMES).to_numpy()).astype(np.float32)
    row = frame.select(pl.int_range(pl.len()).over("symbol").alias("r"))["r"].to_numpy()
    ends = np.flatnonzero(row >= SEQ_LEN - 1)
    sampled = ends[(row[ends] - (SEQ_LEN - 1)) % stride == 0]
    x = np.stack([scaled[e - SEQ_LEN + 1 : e + 1] for e in sampled])
    with torch.inference_mode():
        out = user.model(torch.from_numpy(x))
    targets = user.target_scaler.inverse_transform(
        np.concatenate([out["returns"].numpy(), out["volatility"].numpy()], axis=1).astype(np.float64)
    )
    conf = out["confidence"].numpy()
    values = {"ret_1h": targets[:, 0], "vol_10m": targets[:, 1], "ret_conf": conf[:, 0], "vol_conf": conf[:, 1]}
    source = np.full(len(row), -1)
    source[sampled] = np.arange(len(sampled))
    source = np.maximum.accumulate(source)  # the last sampled row at or before each row
    keep = row >= SEQ_LEN - 1  # a symbol's first window is sampled: its rows are filled from its own
    return pl.DataFrame(
        {
            "symbol": frame["symbol"].to_numpy()[keep],
            "ts": frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_numpy()[keep],
            **{GOLDEN_COLUMNS[n]: v[source[keep]] for n, v in values.items()},
        }
    )


def write_golden(user: User, features: Path, folder: Path, stride: int = 1) -> Path:
    """The user's predictions of every date, ``folder/{date}.csv``, as their script writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    for day in DAYS:
        frame = pl.read_parquet(features / f"{day}.parquet")
        user_predict(user, frame, stride).write_csv(folder / f"{day}.csv")
    return folder


def files_spec(
    user: User, features: Path, *, computed: list[str] | None = None, golden: str = "", extra: str = ""
) -> str:
    """A spec whose inputs come from the user's feature files (``computed``: names tthf computes instead)."""
    names = USER_FEATURES[:10] + FILE_NAMES[10:] if computed else FILE_NAMES
    text = user_spec(user).replace(f"names = {USER_FEATURES!r}".replace("'", '"'), f"names = {names!r}")
    assert "my_" in text or computed
    text = text.replace("'", '"').replace("[data]", "[data]" if computed else "[data]\n# raw bars unused")
    if not computed:
        text = text.replace(f'raw_root = "{user.data}"\n', "")
    table = f"""
[features.columns]
root = "{features}"
path = "{{date}}.parquet"
symbol = "symbol"
ts = "ts"
timezone = "UTC"

[labels]
ret_1h = "fwd_ret_60m"
vol_10m = "fwd_vol_10m"
"""
    features_extra = f"computed = {computed!r}\n".replace("'", '"') if computed else ""
    text = text.replace("\n[scalers]", f'fill = "ffill_then_zero"\n{features_extra}{table}\n[scalers]')
    return text + golden + extra


@dataclass
class Files:
    """The user's feature root and their own predictions of it (dense, and sparse every 10th row)."""

    root: Path  # the feature root ({date}.parquet)
    dense: Path  # the user's dense predictions, {date}.csv
    sparse: Path  # the user's sparse predictions


def write_files(user: User, folder: Path) -> Files:
    """The user's feature files of DAYS under ``folder`` and their script's predictions of them."""
    root = write_feature_root(user, folder / "features")
    return Files(root, write_golden(user, root, folder / "dense"), write_golden(user, root, folder / "sparse", 10))


def import_files_run(user: User, root: Path, store: Path) -> Path:
    """``store`` holding the user's run ``jennifer`` imported from their feature files under ``root`` (no golden
    check) and exported (ONNX): the feature-file run that tests of real time and serving share."""
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig
    from tthf.export.importing import import_run, load_spec

    spec = user.folder / "plain.toml"
    spec.write_text(files_spec(user, root))
    export_run(import_run(load_spec(spec), str(store)).run, ExportConfig(real_windows=0, random_batches=(1,)))
    return store
