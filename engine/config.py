"""The dataclasses that describe a run; each is serialized beside what it produced.

``RunConfig`` is ``config.json`` in a run folder (README.md, "Runs"): the model's
hyperparameters, the window length, the label horizons, the sparse sampling step, the
ordered feature names and the training dates and splits. Loading is strict: unknown or
missing keys are a ``RunFormatError`` that names the key, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tthf.errors import RunFormatError

T = TypeVar("T")

SEQ_LEN = 30
RET_HORIZON = 60
VOL_HORIZON = 10
OUTPUT_NAMES = ("ret_1h", "vol_10m", "ret_conf", "vol_conf")
#: the exchange calendar (ISO MIC code, from exchange_calendars) when nothing names another
DEFAULT_CALENDAR = "XNYS"
#: label horizons in minutes (tthf.engine.features.labels computes the labels at these)
HORIZONS = {"ret_1h": RET_HORIZON, "vol_10m": VOL_HORIZON}
#: windows per batch of a dense run (tthf-run's --batch-size default, an engine optimization profile)
DENSE_BATCH = 4096
#: every symbol of one minute for a broad US universe: the real-time batch, an engine optimization profile
REALTIME_BATCH = 512
#: the fix for a config.json that does not load
RECREATE = "re-create the run with tthf-train (an imported run with tthf-import --overwrite)"


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of ``ThreeHeadedTransformer`` and what its outputs mean.

    ``ret_scale`` and ``vol_scale`` put the targets on unit scale inside the model, so
    the exported graph maps scaled features straight to forecasts in natural units.
    ``ret_band`` and ``vol_band`` define the confidence scores (docs/model.md):
    ``ret_conf`` is the model's probability that ``|realized - forecast| <= ret_band``;
    ``vol_conf`` that ``|log(realized) - log(forecast)| <= vol_band``.
    """

    n_features: int
    seq_len: int = SEQ_LEN
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 64
    dropout: float = 0.0
    ret_scale: float = 1e-2
    vol_scale: float = 1e-3
    ret_band: float = 2.5e-3
    vol_band: float = math.log(1.25)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings, recorded in the run so that it can be reproduced."""

    seed: int = 0
    epochs: int = 6
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 2
    train_stride: int = 5
    max_train_windows: int = 40_000
    val_frac: float = 0.15
    test_frac: float = 0.15
    purge_days: int = 1
    threads: int = 0


@dataclass(frozen=True)
class Splits:
    """Time-ordered trading dates (ISO strings) of each split; ``purged`` were dropped."""

    train: list[str]
    val: list[str]
    test: list[str]
    purged: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImportInfo:
    """What ``tthf-import`` brought in (config.json ``imported``; ``import.json`` holds the full record).

    ``format``: the user's model file (onnx, pt2, state_dict); its served graph is the run's
    ``model.onnx``. ``confidence``: ``band`` (the model's ``ret_band``/``vol_band`` hold the
    bands) or ``score`` (a ranking only: tthf-eval does not calibrate it), per confidence
    output. ``computed``: the feature names tthf computes from raw bars for the model.
    ``groups``: the spec's ``features.groups`` (feature name -> family), the explanations' families.
    """

    format: str
    confidence: dict[str, str]
    computed: list[str]
    groups: dict[str, str] = field(default_factory=dict)


#: how file columns' missing values are filled, per symbol and day, before scaling (design.md, "Importing a run")
FILLS = ("ffill_then_zero", "zero", "none")


@dataclass(frozen=True)
class FeatureFiles:
    """The user's pre-computed feature files: a source of model inputs beside tthf's computed features.

    ``root`` (a local folder or ``s3://``) holds one day per ``path`` (``{date}.parquet`` or
    ``date={date}/*.parquet``); rows are keyed by ``symbol`` and ``ts`` (naive stamps are read
    in ``timezone``). ``columns``: the run's feature names read from the files (the others are
    computed from raw bars); ``fill`` fills their missing values per symbol and day before
    scaling; ``labels``: realized values per output name, columns of the same files.
    """

    root: str
    columns: list[str]
    path: str = "{date}.parquet"
    symbol: str = "symbol"
    ts: str = "ts"
    timezone: str = "UTC"
    fill: str = "ffill_then_zero"
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """``config.json`` of a run; ``source`` is ``train`` (tthf-train) or ``import`` (tthf-import, with ``imported``)."""

    model: ModelConfig
    feature_names: list[str]
    splits: Splits
    train: TrainConfig
    data_root: str
    seq_len: int = 0  # 0: the model's; always equal to model.seq_len once constructed
    horizons: dict[str, int] = field(default_factory=lambda: dict(HORIZONS))
    sample_every: int = 10
    calendar: str = DEFAULT_CALENDAR  # the exchange calendar (ISO MIC) whose sessions the run was trained on
    model_type: str = "three_headed_transformer"
    tthf_version: str = ""
    source: str = "train"
    imported: ImportInfo | None = None
    feature_files: FeatureFiles | None = None  # an imported run's file columns (None: every feature is computed)

    def __post_init__(self) -> None:
        if self.source not in ("train", "import") or (self.source == "import") != (self.imported is not None):
            raise RunFormatError(
                f"config.json: source {self.source!r} with imported={self.imported is not None}; a run is "
                "trained (source 'train') or imported (source 'import' with 'imported'); re-create it"
            )
        # seq_len and horizons are recorded for readers of config.json (README.md, "Runs"); the
        # model's seq_len and the label code's horizons are the facts, so the echoes must agree.
        if not self.seq_len:
            object.__setattr__(self, "seq_len", self.model.seq_len)
        if self.seq_len != self.model.seq_len:
            raise RunFormatError(
                f"config.json: seq_len={self.seq_len} but model.seq_len={self.model.seq_len}; the config was edited "
                f"by hand or is corrupt, {RECREATE}"
            )
        if self.horizons != HORIZONS:
            raise RunFormatError(
                f"config.json: horizons {self.horizons}, but this tthf computes labels at {HORIZONS}; "
                "use the tthf version that trained the run (config.json 'tthf_version') or retrain it"
            )

    @property
    def computed_names(self) -> list[str]:
        """The feature names tthf computes from raw bars: all but those the run reads from feature files."""
        files = set(self.feature_files.columns) if self.feature_files else set()
        return [n for n in self.feature_names if n not in files]

    def to_json(self) -> str:
        doc = dataclasses.asdict(self)
        if doc["feature_files"] is None:  # a run without feature files writes the config.json it always did
            del doc["feature_files"]
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> RunConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunFormatError(f"{source}: not valid JSON ({exc}); {RECREATE}") from exc
        cfg = from_dict(cls, raw, source)
        if cfg.model.n_features != len(cfg.feature_names):
            raise RunFormatError(
                f"{source}: model.n_features={cfg.model.n_features} but {len(cfg.feature_names)} feature_names; "
                f"the config was edited by hand or is corrupt, {RECREATE}"
            )
        return cfg


_NESTED = {
    "model": ModelConfig,
    "splits": Splits,
    "train": TrainConfig,
    "imported": ImportInfo,
    "feature_files": FeatureFiles,
}


def from_dict(cls: type[T], raw: Any, source: str) -> T:
    """Build a config dataclass from JSON, naming any unknown or missing key."""
    if not isinstance(raw, dict):
        raise RunFormatError(f"{source}: expected an object for {cls.__name__}, got {type(raw).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise RunFormatError(
            f"{source}: unknown key(s) {unknown} in {cls.__name__}; "
            "this run was written by a different tthf version, upgrade tthf or re-create the run"
        )
    missing = [
        n
        for n, f in names.items()
        if n not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RunFormatError(f"{source}: missing key(s) {missing} in {cls.__name__}; {RECREATE}")
    kwargs = {}
    for key, value in raw.items():
        sub = _NESTED.get(key) if cls is RunConfig else None
        kwargs[key] = from_dict(sub, value, source) if sub and value is not None else value
    return cls(**kwargs)
