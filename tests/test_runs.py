from __future__ import annotations

import datetime as dt

import pytest

from tthf.engine import runs as runs_module
from tthf.engine.config import ModelConfig, RunConfig, Splits, TrainConfig
from tthf.engine.runs import CONFIG, Run, RunRef, create_run, find_run, list_runs, output_key, parse_output_key
from tthf.engine.store import Store
from tthf.errors import AmbiguousRunError, RunFormatError, RunNotFoundError, StoreError, UsageError


def config() -> RunConfig:
    return RunConfig(
        model=ModelConfig(n_features=2),
        feature_names=["spread", "ret_1m"],
        splits=Splits(train=["2024-03-04"], val=["2024-03-05"], test=["2024-03-06"]),
        train=TrainConfig(),
        data_root="data/market",
    )


def make(store: Store, experiment: str, model_type: str, run_id: str) -> RunRef:
    ref = create_run(store, experiment, model_type, run_id)
    Run.new(ref, config())
    return ref


@pytest.fixture
def runs(tmp_store: Store) -> Store:
    for exp, mt, rid in [
        ("demo", "three_headed_transformer", "jennifer"),
        ("demo", "three_headed_transformer", "jennifer2"),
        ("demo", "three_headed_transformer", "jenny"),
        ("demo", "three_headed_transformer", "bob"),
        ("other", "three_headed_transformer", "bob"),
        ("other", "baseline", "alice-v1"),
    ]:
        make(tmp_store, exp, mt, rid)
    return tmp_store


def test_exact_match_beats_prefix(runs: Store) -> None:
    ref = find_run(runs, "jennifer")  # also a prefix of jennifer2
    assert (ref.experiment, ref.model_type, ref.run_id) == ("demo", "three_headed_transformer", "jennifer")
    assert ref.uri == runs.uri("demo/three_headed_transformer/jennifer")


def test_unique_prefix(runs: Store) -> None:
    assert find_run(runs, "jenny").run_id == "jenny"
    assert find_run(runs, "ali").name == "other/baseline/alice-v1"
    assert find_run(runs, "jennifer2").run_id == "jennifer2"


def test_ambiguous_prefix_lists_candidates(runs: Store) -> None:
    with pytest.raises(AmbiguousRunError) as info:
        find_run(runs, "jen")
    message = str(info.value)
    for name in ("jennifer", "jennifer2", "jenny"):
        assert f"demo/three_headed_transformer/{name}" in message
    assert "bob" not in message and "longer prefix" in message


def test_same_run_id_in_two_experiments_is_ambiguous_until_narrowed(runs: Store) -> None:
    with pytest.raises(AmbiguousRunError, match=r"2 runs named 'bob'.*demo/.*/bob.*other/.*/bob.*--experiment"):
        find_run(runs, "bob")
    assert find_run(runs, "bob", experiment="other").experiment == "other"
    assert find_run(runs, "b", experiment="demo", model_type="three_headed_transformer").run_id == "bob"


def test_no_match_lists_what_exists(runs: Store) -> None:
    with pytest.raises(RunNotFoundError) as info:
        find_run(runs, "zed")
    message = str(info.value)
    assert "no run matches 'zed'" in message
    assert "other/baseline/alice-v1" in message and "demo/three_headed_transformer/jenny" in message
    with pytest.raises(RunNotFoundError, match="within other/baseline"):
        find_run(runs, "jennifer", experiment="other", model_type="baseline")


def test_empty_store_says_train_one(tmp_store: Store) -> None:
    with pytest.raises(RunNotFoundError, match="no runs there; train one with tthf-train"):
        find_run(tmp_store, "x")


def test_open_loads_config_and_moves_bytes(runs: Store) -> None:
    run = Run.open(find_run(runs, "jennifer"))
    assert run.config == config()
    run.write_text("metrics.json", "{}")
    run.write_bytes("export/model.onnx", b"\x08\x01")
    assert run.read_text("metrics.json") == "{}"
    assert runs.read_bytes("demo/three_headed_transformer/jennifer/export/model.onnx") == b"\x08\x01"
    assert run.exists(CONFIG) and not run.exists("scalers.json")
    assert run.store.list() == ["config.json", "export/model.onnx", "metrics.json"]


def test_create_existing_run_needs_overwrite(runs: Store) -> None:
    ref = find_run(runs, "jenny")
    ref.store.write_text("metrics.json", "{}")
    with pytest.raises(StoreError, match="already exists.*--overwrite"):
        create_run(runs, "demo", "three_headed_transformer", "jenny")
    fresh = create_run(runs, "demo", "three_headed_transformer", "jenny", overwrite=True)
    assert fresh == ref
    assert fresh.store.list() == []  # the old run's files are gone, nothing stale survives


def test_incomplete_run_is_a_format_error(tmp_store: Store) -> None:
    ref = create_run(tmp_store, "demo", "three_headed_transformer", "half")
    ref.store.write_text("metrics.json", "{}")
    with pytest.raises(RunFormatError, match="not a tthf run.*import it with `tthf-import") as info:
        Run.open(find_run(tmp_store, "half"))
    assert "delete" not in str(info.value)  # never destructive advice
    ref.store.write_text(CONFIG, config().to_json().replace('"n_features": 2', '"n_features": 3'))
    with pytest.raises(RunFormatError, match="config.json: model.n_features=3"):
        Run.open(ref)


@pytest.mark.parametrize("bad", ["", "a/b", "..", "-x", "has space"])
def test_names_must_be_single_folder_names(tmp_path, bad: str) -> None:
    with pytest.raises(UsageError, match="invalid run id"):
        create_run(str(tmp_path), "demo", "three_headed_transformer", bad)


def test_list_runs_sorted(runs: Store) -> None:
    names = [r.name for r in list_runs(runs)]
    assert names == sorted(names) and len(names) == 6


def test_config_echoes_must_agree_with_the_model_and_the_label_code() -> None:
    import dataclasses
    import json

    from tthf.engine.config import HORIZONS
    from tthf.errors import RunFormatError

    cfg = config()
    assert cfg.seq_len == cfg.model.seq_len and cfg.horizons == HORIZONS
    raw = json.loads(cfg.to_json())
    raw["seq_len"] = cfg.model.seq_len + 1
    with pytest.raises(RunFormatError, match="seq_len"):
        RunConfig.from_json(json.dumps(raw))
    with pytest.raises(RunFormatError, match="horizons"):
        dataclasses.replace(cfg, horizons={"ret_1h": 30, "vol_10m": 10})


def test_open_run_resolves_a_prefix_and_records_the_store_root(runs: Store) -> None:
    from tthf.engine.runs import open_run

    run = open_run(runs, "jenny", experiment="demo")
    assert run.ref.run_id.startswith("jenny") and run.ref.root == runs.uri()
    assert run.config.model.n_features == 2
    with pytest.raises(RunNotFoundError):
        open_run(runs.uri(), "nobody")


def test_a_run_locator_crosses_to_another_process_and_opens_the_same_run(runs: Store) -> None:
    import pickle

    ref = find_run(runs, "jenny")
    run = pickle.loads(pickle.dumps(ref.locator())).open()
    assert run.ref == ref and run.ref.uri == ref.uri and run.ref.root == ref.root == runs.uri()
    assert run.config == Run.open(ref).config


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_parse_output_key_inverts_output_key(fmt: str) -> None:
    day = dt.date(2024, 2, 29)
    assert parse_output_key(output_key(day, fmt)) == (day, fmt)


@pytest.mark.parametrize(
    "key",
    [
        "inference/manifest.json",  # the run manifest beside the files
        "inference/2024-13-45.csv",  # the shape of a date, not a date
        "inference/2024-02-29",  # no format
        "inference/old/2024-02-29.csv",  # not in the inference folder itself
        "evaluation/2024-02-29.csv",
        "inference/2024-02-29.csv.tmp",
    ],
)
def test_parse_output_key_refuses_any_other_key(key: str) -> None:
    assert parse_output_key(key) is None


def test_a_named_prediction_set_is_its_own_folder_with_its_own_manifest() -> None:
    day = dt.date(2024, 2, 29)
    assert output_key(day, "csv", "default") == output_key(day, "csv") == "inference/2024-02-29.csv"
    assert output_key(day, "csv", "int8") == "inference/int8/2024-02-29.csv"
    assert runs_module.inference_manifest_key("int8") == "inference/int8/manifest.json"
    assert runs_module.inference_manifest_key() == runs_module.INFERENCE_MANIFEST
    assert parse_output_key("inference/int8/2024-02-29.csv", "int8") == (day, "csv")
    assert parse_output_key("inference/int8/2024-02-29.csv") is None  # another set's file is not the default's
    assert parse_output_key("inference/2024-02-29.csv", "int8") is None


@pytest.mark.parametrize("name", ["", "a.b", "../x", "a/b", "-x", "x" * 65])
def test_a_prediction_set_name_is_one_plain_folder_name(name: str) -> None:
    with pytest.raises(UsageError, match="invalid prediction set"):
        runs_module.check_predictions(name)
