"""Training: time-ordered splits with a purge gap, the Gaussian NLL fit, and a full run.

``train_run`` is what ``tthf-train`` calls: it reads the data root, builds features per
day, fits the scalers on the training split only, derives the output scales and the
return band from the training labels, fits the model with early stopping on the
validation split, scores it on the test split against naive baselines and writes the
run folder (config.json last, so a run with a config is a finished run).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import tthf
from tthf.engine import runs
from tthf.engine.config import DEFAULT_CALENDAR, ModelConfig, RunConfig, Splits, TrainConfig
from tthf.engine.data.marketdata import list_dates, read_day
from tthf.engine.features import build_day
from tthf.engine.features.day import DayFeatures
from tthf.engine.features.scalers import Scalers
from tthf.engine.model.network import ThreeHeadedTransformer, TrainOutputs, save_checkpoint, vol_floor
from tthf.engine.store import Store, open_store
from tthf.engine.training.dataset import ThreeHeadedTransformerDataset
from tthf.engine.training.metrics import evaluate
from tthf.errors import DataError, NoDataError, UsageError

log = logging.getLogger("tthf.train")

ScaledDay = tuple[np.ndarray, DayFeatures]
WARMUP_STEPS = 50
MIN_LR_FRACTION = 0.05
GRAD_CLIP = 1.0
# Model settings derived from the training labels; never set by hand.
DERIVED = ("n_features", "ret_scale", "vol_scale", "ret_band")


def split_dates(dates: Sequence[dt.date | str], cfg: TrainConfig) -> Splits:
    """Train, val and test by time, each separated by ``purge_days`` dropped trading dates.

    Test is the last ``round(n * test_frac)`` dates (at least one), val the
    ``round(n * val_frac)`` before it (at least one), train the rest; the purge
    gap keeps the end of one split from sharing a market regime with the next.
    """
    days = sorted({d if isinstance(d, str) else d.isoformat() for d in dates})
    n = len(days)
    n_test = max(1, round(n * cfg.test_frac))
    n_val = max(1, round(n * cfg.val_frac))
    gap = cfg.purge_days
    n_train = n - n_test - n_val - 2 * gap
    if n_train < 1:
        raise UsageError(
            f"{n} trading date(s) with data are too few for a train / val / test split with purge_days={gap} "
            f"(needs at least {n_test + n_val + 2 * gap + 1}); add dates to the data root or lower "
            "val_frac, test_frac or purge_days"
        )
    val_start = n_train + gap
    test_start = val_start + n_val + gap
    return Splits(
        train=days[:n_train],
        val=days[val_start : val_start + n_val],
        test=days[test_start:],
        purged=days[n_train:val_start] + days[val_start + n_val : test_start],
    )


def label_scales(days: Sequence[ScaledDay], cfg: TrainConfig, seq_len: int) -> dict[str, Any]:
    """ret_scale (std of ret_1h), vol_scale (median vol_10m) and ret_band (median |ret_1h|)
    over the training windows, so the heads work on unit scale."""
    y = ThreeHeadedTransformerDataset(days, seq_len=seq_len, stride=cfg.train_stride).labels()
    if len(y) == 0:
        raise DataError(
            "the training dates have no window with both labels; check the data root (each symbol needs "
            f"{seq_len} usable minutes before and an hour after a minute) or add dates"
        )
    ret, vol = y[:, 0].astype(np.float64), y[:, 1].astype(np.float64)
    positive = vol[vol > 0]
    return {
        "ret_scale": float(max(ret.std(), 1e-6)),
        "vol_scale": float(np.median(positive)) if len(positive) else 1e-4,
        "ret_band": float(max(np.median(np.abs(ret)), 1e-6)),
    }


def gaussian_nll(out: TrainOutputs, y: torch.Tensor, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL (without the constant) of ret / ret_scale and of log(vol / vol_scale)."""
    t_ret = y[:, 0] / cfg.ret_scale
    t_vol = torch.log(torch.clamp(y[:, 1], min=vol_floor(cfg)) / cfg.vol_scale)

    def nll(target: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        return (log_sigma + 0.5 * ((target - mu) * torch.exp(-log_sigma)) ** 2).mean()

    return nll(t_ret, out.ret_mu, out.ret_log_sigma), nll(t_vol, out.logvol_mu, out.vol_log_sigma)


@dataclass
class History:
    """Per-epoch losses (NLL of both heads, summed) and which epoch's weights were kept."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False
    n_train_windows: int = 0
    n_val_windows: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@torch.no_grad()
def _val_loss(model: ThreeHeadedTransformer, ds: ThreeHeadedTransformerDataset, batch_size: int) -> tuple[float, float]:
    model.eval()
    total_r = total_v = 0.0
    for batch in ds.batches(batch_size):
        r, v = gaussian_nll(model.forward_train(batch.x), batch.y, model.cfg)
        total_r += float(r) * len(batch.ids)
        total_v += float(v) * len(batch.ids)
    return total_r / len(ds), total_v / len(ds)


def fit(
    train_days: Sequence[ScaledDay],
    val_days: Sequence[ScaledDay],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
) -> tuple[ThreeHeadedTransformer, History]:
    """AdamW on the Gaussian NLL, early stopping on validation loss, best weights restored.

    Each epoch draws a fresh random sample of at most ``max_train_windows`` of the
    training windows (all of them at ``train_stride``) so that an epoch's cost is
    bounded however many days there are. Deterministic for a given seed and thread
    count; the caller's torch RNG state is left untouched.
    """
    seq_len = model_cfg.seq_len
    train_ds = ThreeHeadedTransformerDataset(train_days, seq_len=seq_len, stride=train_cfg.train_stride)
    val_ds = ThreeHeadedTransformerDataset(val_days, seq_len=seq_len, stride=train_cfg.train_stride)
    for name, ds in (("training", train_ds), ("validation", val_ds)):
        if len(ds) == 0:
            raise DataError(f"the {name} dates have no window with both labels; add dates to the data root")
    history = History(n_train_windows=len(train_ds), n_val_windows=len(val_ds))
    threads = torch.get_num_threads()
    started = time.perf_counter()
    try:
        if train_cfg.threads > 0:
            torch.set_num_threads(train_cfg.threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_cfg.seed)
            model = _fit_loop(train_ds, val_ds, model_cfg, train_cfg, history)
    finally:
        torch.set_num_threads(threads)
    history.seconds = time.perf_counter() - started
    return model, history


def _schedule(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over WARMUP_STEPS, then cosine decay to MIN_LR_FRACTION over ``total`` steps."""

    def lr_factor(step: int) -> float:
        warm = min(1.0, (step + 1) / WARMUP_STEPS)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total)))
        return warm * (MIN_LR_FRACTION + (1.0 - MIN_LR_FRACTION) * cosine)

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def _train_epoch(
    model: ThreeHeadedTransformer,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    train_ds: ThreeHeadedTransformerDataset,
    cfg: TrainConfig,
    gen: torch.Generator,
    per_epoch: int,
) -> float:
    """One pass over a fresh sample of ``per_epoch`` training windows; returns the mean training loss."""
    model.train()
    sum_loss = 0.0
    for batch in train_ds.batches(cfg.batch_size, shuffle=True, generator=gen, limit=per_epoch):
        r, v = gaussian_nll(model.forward_train(batch.x), batch.y, model.cfg)
        loss = r + v
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        sched.step()
        sum_loss += float(loss.detach()) * len(batch.ids)
    return sum_loss / per_epoch


def _fit_loop(
    train_ds: ThreeHeadedTransformerDataset,
    val_ds: ThreeHeadedTransformerDataset,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    history: History,
) -> ThreeHeadedTransformer:
    model = ThreeHeadedTransformer(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = min(len(train_ds), cfg.max_train_windows)
    steps_per_epoch = math.ceil(per_epoch / cfg.batch_size)
    sched = _schedule(opt, max(1, cfg.epochs * steps_per_epoch))
    gen = torch.Generator().manual_seed(cfg.seed)
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    log.info(
        "training on %d of %d windows per epoch, validating on %d (%d steps/epoch)",
        per_epoch,
        len(train_ds),
        len(val_ds),
        steps_per_epoch,
    )
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss = _train_epoch(model, opt, sched, train_ds, cfg, gen, per_epoch)
        val_r, val_v = _val_loss(model, val_ds, cfg.batch_size * 4)
        val_loss = val_r + val_v
        improved = val_loss < history.best_val_loss
        history.epochs.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_ret_nll": val_r,
                "val_vol_nll": val_v,
                "seconds": time.perf_counter() - t0,
            }
        )
        log.info(
            "epoch %d/%d  train %.4f  val %.4f (ret %.4f, vol %.4f)%s  %.1f s",
            epoch,
            cfg.epochs,
            train_loss,
            val_loss,
            val_r,
            val_v,
            "  best" if improved else "",
            time.perf_counter() - t0,
        )
        if improved:
            history.best_epoch, history.best_val_loss = epoch, val_loss
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bad_epochs = 0
            continue
        bad_epochs += 1
        if bad_epochs >= cfg.patience and epoch < cfg.epochs:
            history.stopped_early = True
            log.info("no improvement for %d epochs: stopping, keeping epoch %d", bad_epochs, history.best_epoch)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


@dataclass
class TrainResult:
    run: runs.Run
    model: ThreeHeadedTransformer
    metrics: dict[str, Any]
    history: History
    seconds: float


def _apply_overrides(overrides: Mapping[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """Split ``overrides`` into TrainConfig fields and settable ModelConfig fields."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)} - set(DERIVED)
    unknown = sorted(set(overrides) - train_fields - model_fields)
    if unknown:
        raise UsageError(
            f"unknown training setting(s) {unknown}; settable: {sorted(train_fields | model_fields)} "
            f"({', '.join(DERIVED)} are derived from the data)"
        )
    train_cfg = TrainConfig(**{k: v for k, v in overrides.items() if k in train_fields})
    return train_cfg, {k: v for k, v in overrides.items() if k in model_fields}


def build_days(data_root: Any, dates: Sequence[str], what: str, calendar: str = DEFAULT_CALENDAR) -> list[DayFeatures]:
    """Read and featurize each date, logging progress."""
    out = []
    for i, iso in enumerate(dates, start=1):
        t0 = time.perf_counter()
        day = dt.date.fromisoformat(iso)
        out.append(build_day(read_day(data_root, day, calendar=calendar), day, calendar=calendar))
        log.info(
            "%s features %d/%d: %s (%d symbols) %.1f s",
            what,
            i,
            len(dates),
            iso,
            len(out[-1].symbols),
            time.perf_counter() - t0,
        )
    return out


def _splits(data: Store, cfg: TrainConfig) -> Splits:
    """The data root's dates split by time with purge gaps (logged)."""
    dates = list_dates(data)
    if not dates:
        raise NoDataError(
            f"no dates under {data.uri()} (expected date=YYYY-MM-DD/*.parquet); "
            "generate data with tthf-synth or pass --data"
        )
    splits = split_dates(dates, cfg)
    log.info(
        "%d dates: train %s..%s (%d), val %s..%s (%d), test %s..%s (%d), purged %d",
        len(dates),
        splits.train[0],
        splits.train[-1],
        len(splits.train),
        splits.val[0],
        splits.val[-1],
        len(splits.val),
        splits.test[0],
        splits.test[-1],
        len(splits.test),
        len(splits.purged),
    )
    return splits


def _write_run(
    ref: runs.RunRef, model: ThreeHeadedTransformer, scalers: Scalers, metrics: dict[str, Any], config: RunConfig
) -> runs.Run:
    """Checkpoint, scalers and metrics, then config.json last: a run with a config is a finished run."""
    ref.store.write_bytes(runs.CHECKPOINT, save_checkpoint(model))
    ref.store.write_text(runs.SCALERS, scalers.to_json())
    ref.store.write_text(runs.METRICS, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return runs.Run.new(ref, config)


def train_run(
    data_root: Store | str,
    store: Store | str,
    run: str,
    *,
    experiment: str = runs.DEFAULT_EXPERIMENT,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    endpoint_url: str | None = None,
    calendar: str = DEFAULT_CALENDAR,
) -> TrainResult:
    """Train a model on ``data_root`` and write the complete run ``run`` into ``store``.

    ``calendar`` (an exchange's ISO MIC code) gives each date's regular session; the run
    records it and every later stage (tthf-run, tthf-eval, real time) uses the run's.
    """
    started = time.perf_counter()
    train_cfg, model_settings = _apply_overrides(overrides or {})
    data = open_store(data_root, endpoint_url=endpoint_url) if isinstance(data_root, str) else data_root
    root = open_store(store, endpoint_url=endpoint_url) if isinstance(store, str) else store
    ref = runs.create_run(root, experiment, runs.DEFAULT_MODEL_TYPE, run, overwrite=overwrite)
    splits = _splits(data, train_cfg)
    train_raw = build_days(data, splits.train, "train", calendar)
    feature_names = list(train_raw[0].feature_names)
    scalers = Scalers.fit(train_raw)

    def scale(days: list[DayFeatures]) -> list[ScaledDay]:
        return [(scalers.transform_day(d, feature_names), d) for d in days]

    train_days = scale(train_raw)
    val_days = scale(build_days(data, splits.val, "val", calendar))
    model_cfg = ModelConfig(
        n_features=len(feature_names),
        **model_settings,
        **label_scales(train_days, train_cfg, model_settings.get("seq_len", ModelConfig.seq_len)),
    )
    log.info(
        "targets: ret_scale %.3g, vol_scale %.3g, ret_band %.3g",
        model_cfg.ret_scale,
        model_cfg.vol_scale,
        model_cfg.ret_band,
    )
    model, history = fit(train_days, val_days, model_cfg, train_cfg)
    del train_days, val_days, train_raw
    t0 = time.perf_counter()
    test_metrics = evaluate(model, scale(build_days(data, splits.test, "test", calendar)))
    log.info("evaluated %d test windows in %.1f s", test_metrics["n_windows"], time.perf_counter() - t0)
    config = RunConfig(
        model=model_cfg,
        feature_names=feature_names,
        splits=splits,
        train=train_cfg,
        data_root=data.uri(),
        calendar=calendar,
        tthf_version=tthf.__version__,
    )
    metrics = {"test": test_metrics, "training": history.to_dict()}
    result = _write_run(ref, model, scalers, metrics, config)
    seconds = time.perf_counter() - started
    log.info("run %s written to %s in %.1f s", ref.name, ref.uri, seconds)
    return TrainResult(result, model, metrics, history, seconds)
