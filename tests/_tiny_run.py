"""A tiny but real run for export and backend tests: synthetic raw data on disk, real
features and scalers, and a randomly initialized (untrained) small model.

Validation compares artifacts with the reference, so training would add minutes and
test nothing more.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

from tthf.engine import runs
from tthf.engine.config import ModelConfig, RunConfig, Splits, TrainConfig
from tthf.engine.features import build_day
from tthf.engine.marketdata import read_day, write_day
from tthf.engine.model import ThreeHeadedTransformer, save_checkpoint
from tthf.engine.scalers import Scalers
from tthf.engine.synth import SynthConfig, generate_day

DAYS = [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)]


def make_data(root: Path, n_symbols: int = 3) -> Path:
    cfg = SynthConfig(n_symbols=n_symbols, start=DAYS[0], end=DAYS[-1], seed=3)
    for day in DAYS:
        write_day(str(root), day, generate_day(cfg, day))
    return root


def make_run(store: str, data_root: Path, run_id: str = "jennifer", seed: int = 0, *, d_model: int = 16) -> runs.Run:
    train_day = build_day(read_day(str(data_root), DAYS[0]), DAYS[0])
    names = list(train_day.feature_names)
    torch.manual_seed(seed)
    model_cfg = ModelConfig(n_features=len(names), d_model=d_model, n_heads=2, n_layers=1, d_ff=2 * d_model)
    model = ThreeHeadedTransformer(model_cfg).eval()
    ref = runs.create_run(store, runs.DEFAULT_EXPERIMENT, runs.DEFAULT_MODEL_TYPE, run_id, overwrite=True)
    ref.store.write_bytes(runs.CHECKPOINT, save_checkpoint(model))
    ref.store.write_text(runs.SCALERS, Scalers.fit([train_day]).to_json())
    splits = Splits(train=[DAYS[0].isoformat()], val=[DAYS[1].isoformat()], test=[DAYS[2].isoformat()])
    config = RunConfig(model=model_cfg, feature_names=names, splits=splits, train=TrainConfig(),
                       data_root=str(data_root), seq_len=model_cfg.seq_len)
    return runs.Run.new(ref, config)
