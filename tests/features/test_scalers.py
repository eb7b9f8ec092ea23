"""Per-feature scaling: fitted on training days only, reordered by name, strict JSON."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest

from tthf.engine.features import scalers as scalers_mod
from tthf.engine.features.day import DayFeatures
from tthf.engine.features.scalers import CLIP, Scalers
from tthf.errors import DataError, FeatureMismatchError, RunFormatError

NAMES = ["a", "b", "c", "d"]


def make_day(
    seed: int, names=NAMES, n_sym: int = 5, n_min: int = 40, scale: float = 1.0, masked: float = 0.2
) -> DayFeatures:
    rng = np.random.default_rng(seed)
    f = len(names)
    features = (rng.normal(size=(n_sym, n_min, f)) * np.arange(1, f + 1) * scale + np.arange(f) * 10).astype(np.float32)
    mask = rng.random((n_sym, n_min)) >= masked
    features[~mask] = 1e6  # what masked minutes hold must not matter
    return DayFeatures(
        date=dt.date(2024, 1, 2) + dt.timedelta(days=seed),
        symbols=[f"S{i}" for i in range(n_sym)],
        minutes=np.arange(n_min).astype("datetime64[m]").astype("datetime64[us]"),
        feature_names=list(names),
        features=features,
        mask=mask,
        labels=np.full((n_sym, n_min, 2), np.nan, dtype=np.float32),
    )


def test_fit_uses_only_masked_minutes_of_the_days_passed():
    days = [make_day(1), make_day(2)]
    sc = Scalers.fit(iter(days))  # a generator is enough
    rows = np.concatenate([d.features[d.mask] for d in days]).astype(np.float64)
    assert sc.names == tuple(NAMES) and sc.count == len(rows)
    np.testing.assert_allclose(sc.mean, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sc.std, rows.std(axis=0), rtol=1e-10)


def test_a_validation_day_not_passed_changes_nothing():
    train = [make_day(1), make_day(2)]
    huge_val = make_day(3, scale=1e4)
    a = Scalers.fit(train)
    b = Scalers.fit(d for d in train)  # val day built but not passed
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.std, b.std)
    with_val = Scalers.fit([*train, huge_val])
    assert (with_val.std > 10 * a.std).all()  # the check above would have noticed a leak


def test_streaming_in_blocks_matches_one_pass(monkeypatch):
    days = [make_day(i, n_sym=7, n_min=50) for i in range(4)]
    one = Scalers.fit(days)
    monkeypatch.setattr(scalers_mod, "_CHUNK", 13)
    blocks = Scalers.fit(days)
    np.testing.assert_allclose(blocks.mean, one.mean, rtol=1e-12)
    np.testing.assert_allclose(blocks.std, one.std, rtol=1e-10)


def test_constant_feature_scales_to_zero():
    day = make_day(1)
    day.features[..., 2] = 7.5
    sc = Scalers.fit([day])
    assert sc.std[2] == 1.0 and sc.mean[2] == 7.5
    out = sc.transform_day(day, NAMES)
    assert (out[..., 2] == 0).all()


def test_transform_reorders_by_name_scales_and_clips():
    day = make_day(1)
    sc = Scalers.fit([day])
    original = day.features.copy()
    order = ["c", "a", "d", "b"]
    out = sc.transform_day(day, order)
    assert out.shape == day.features.shape and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    for j, name in enumerate(order):
        i = NAMES.index(name)
        expected = np.clip((original[..., i] - sc.mean[i]) / sc.std[i], -CLIP, CLIP)
        np.testing.assert_allclose(out[..., j], expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(day.features, original)  # the day is not modified
    assert out[~day.mask].max() == CLIP  # masked minutes hold 1e6: clipped
    assert abs(out[day.mask]).max() < CLIP


def test_day_features_in_another_order_are_matched_by_name():
    day = make_day(1)
    sc = Scalers.fit([day])
    perm = [3, 1, 0, 2]
    shuffled = make_day(1)
    shuffled.features = np.ascontiguousarray(day.features[..., perm])
    shuffled.feature_names = [NAMES[i] for i in perm]
    assert np.array_equal(sc.transform_day(shuffled, NAMES), sc.transform_day(day, NAMES))


def test_a_run_may_use_a_subset_of_the_features_in_its_own_order():
    day = make_day(1)
    order = [NAMES[2], NAMES[0]]
    sub = Scalers(names=tuple(order), mean=np.array([0.5, -1.0]), std=np.array([2.0, 4.0]), count=1, clip=math.inf)
    got = sub.transform_day(day, order)
    want = ((day.features[..., [2, 0]] - np.float32([0.5, -1.0])) * np.float32([0.5, 0.25])).astype(np.float32)
    assert got.shape[-1] == 2 and np.array_equal(got, want)
    assert Scalers.from_json(sub.to_json()).clip == math.inf  # "never clips" survives scalers.json (as null)


def test_missing_or_extra_features_are_errors_that_say_how_to_fix():
    sc = Scalers.fit([make_day(1)])
    with pytest.raises(FeatureMismatchError, match=r"missing \['d'\].*retrain"):
        sc.transform_day(make_day(2, names=["a", "b", "c", "x"]), NAMES)
    with pytest.raises(FeatureMismatchError, match=r"scalers\.json.*missing \['e'\]"):
        sc.transform_day(make_day(2, names=[*NAMES, "e"]), [*NAMES, "e"])
    with pytest.raises(FeatureMismatchError, match="more than once"):
        sc.transform_day(make_day(2), [*NAMES, "a"])
    with pytest.raises(FeatureMismatchError, match="differ from the earlier training days"):
        Scalers.fit([make_day(1), make_day(2, names=["a", "b", "c", "z"])])


def test_no_valid_minutes_is_a_data_error():
    with pytest.raises(DataError, match="no masked-valid minutes"):
        Scalers.fit([make_day(1, masked=1.0)])
    with pytest.raises(DataError, match="no masked-valid minutes"):
        Scalers.fit([])


def test_json_round_trip_is_exact():
    sc = Scalers.fit([make_day(1), make_day(2)])
    back = Scalers.from_json(sc.to_json())
    assert back.names == sc.names and back.count == sc.count and back.clip == sc.clip
    assert np.array_equal(back.mean, sc.mean) and np.array_equal(back.std, sc.std)
    day = make_day(3)
    assert np.array_equal(back.transform_day(day, NAMES), sc.transform_day(day, NAMES))


def _edit(doc: dict, path: tuple, value) -> str:
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("extra",), 1, "expected an object with keys"),
        (("count",), KeyError, "expected an object with keys"),
        (("version",), 2, "version 2"),
        (("format",), "other", "format 'other'"),
        (("clip",), -1, "'clip' must be a positive number"),
        (("count",), True, "'count' must be a positive integer"),
        (("features",), [], "non-empty list"),
        (("features", 0, "std"), 0.0, "positive finite std"),
        (("features", 0, "mean"), "1.0", "finite mean"),
        (("features", 0, "unit"), "bps", "exactly the keys"),
        (("features", 1, "name"), "a", "more than once"),
        (("features", 1, "name"), "", "non-empty string"),
    ],
)
def test_bad_json_is_a_run_format_error(path, value, message):
    doc = json.loads(Scalers.fit([make_day(1)]).to_json())
    with pytest.raises(RunFormatError, match=message):
        Scalers.from_json(_edit(doc, path, value), source="runs/x/scalers.json")


def test_unparsable_or_non_finite_json_is_a_run_format_error():
    with pytest.raises(RunFormatError, match=r"runs/x/scalers\.json: not valid JSON"):
        Scalers.from_json("{", source="runs/x/scalers.json")
    with pytest.raises(RunFormatError, match="expected an object"):
        Scalers.from_json("[]")
    doc = json.loads(Scalers.fit([make_day(1)]).to_json())
    for bad in (float("nan"), float("inf")):
        doc["features"][0]["std"] = bad  # json.dumps writes NaN / Infinity, which json.loads accepts
        with pytest.raises(RunFormatError, match="positive finite std"):
            Scalers.from_json(json.dumps(doc))


def test_on_built_features():
    """End to end with tthf.engine.features: scaled training features have mean ~0 on valid minutes."""
    from tthf.engine.features import FEATURE_NAMES, build_day

    synth = pytest.importorskip("tthf.engine.data.synth")
    date = dt.date(2024, 1, 3)
    day = build_day(synth.generate_day(synth.SynthConfig(n_symbols=4, start=date, end=date), date), date)
    sc = Scalers.fit([day])
    out = sc.transform_day(day, list(FEATURE_NAMES))
    valid = out[day.mask]
    assert np.isfinite(out).all() and np.abs(out).max() <= CLIP
    varying = sc.std != 1.0
    assert varying.sum() > 50
    np.testing.assert_allclose(valid.mean(axis=0)[varying], 0, atol=0.05)
