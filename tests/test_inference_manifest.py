"""inference/manifest.json: the bytes tthf-run writes, strict loading, and what a manifest that does not load does."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from tthf.engine import runs
from tthf.engine.inference_manifest import DateResult, InferenceSettings, RaySettings, RunManifest
from tthf.engine.runs import open_run
from tthf.errors import RunFormatError

SOURCE = "s3://bucket/runs/x/inference/manifest.json"

#: written by tthf 915e633 (settings a plain dict) for the manifest ``golden()`` builds: the format must not change
GOLDEN = """{
 "dates": {
  "2024-01-03": {
   "backend": "torch",
   "counts": {
    "rows_in": 1594
   },
   "date": "2024-01-03",
   "executor": "ray",
   "file": "s3://bucket/runs/x/inference/2024-01-03.parquet",
   "reason": "",
   "rows": 1444,
   "seconds": {
    "read": 0.0123,
    "total": 1.5
   },
   "settings": "e15be2bb852c45d3",
   "status": "ok",
   "windowing": "host",
   "windows": 150,
   "worker": "node:123"
  },
  "2024-01-05": {
   "backend": "",
   "counts": {},
   "date": "2024-01-05",
   "executor": "",
   "file": "",
   "reason": "no data under s3://bucket/data/date=2024-01-05",
   "rows": 0,
   "seconds": {},
   "settings": "",
   "status": "no_data",
   "windowing": "",
   "windows": 0,
   "worker": ""
  }
 },
 "run": "demo/three_headed_transformer/jennifer",
 "settings": {
  "backend": "torch",
  "data_root": "s3://bucket/data",
  "dense": false,
  "executor": "ray",
  "format": "parquet",
  "key": "e15be2bb852c45d3",
  "ray": {
   "address": "local",
   "cpus_per_worker": 0.75,
   "gpus_per_worker": 0.0,
   "retries": 2,
   "threads": null,
   "workers": 2
  },
  "stride": 10
 },
 "versions": {
  "python": "3.11.7",
  "tthf": "0.1.0"
 }
}
"""


def golden() -> RunManifest:
    ray = RaySettings(address="local", workers=2, cpus_per_worker=0.75, gpus_per_worker=0.0, threads=None, retries=2)
    settings = InferenceSettings("e15be2bb852c45d3", "torch", 10, False, "parquet", "s3://bucket/data", "ray", ray=ray)
    manifest = RunManifest("demo/three_headed_transformer/jennifer", settings, {"tthf": "0.1.0", "python": "3.11.7"})
    manifest.record(
        DateResult(
            "2024-01-03",
            "ok",
            rows=1444,
            windows=150,
            seconds={"read": 0.0123, "total": 1.5},
            counts={"rows_in": 1594},
            file="s3://bucket/runs/x/inference/2024-01-03.parquet",
            settings="e15be2bb852c45d3",
            backend="torch",
            windowing="host",
            executor="ray",
            worker="node:123",
        )
    )
    manifest.record(DateResult("2024-01-05", "no_data", reason="no data under s3://bucket/data/date=2024-01-05"))
    return manifest


def test_the_typed_manifest_writes_the_bytes_of_the_dict_one_and_reads_them_back() -> None:
    assert golden().to_json() == GOLDEN
    assert RunManifest.from_json(GOLDEN, SOURCE) == golden()


def test_a_manifest_tthf_run_wrote_round_trips_exactly(tmp_path: Path) -> None:
    from tthf.engine.runtime.batch import run_inference
    from tthf.engine.runtime.options import RunOptions
    from tthf.engine.testing import DAYS, make_data, make_run

    run = make_run(str(tmp_path / "runs"), make_data(tmp_path / "data"))
    run_inference(
        open_run(str(tmp_path / "runs"), "jennifer"), RunOptions(dates=f"{DAYS[2]}:2024-01-05", host_workers=2)
    )
    text = run.read_text(runs.INFERENCE_MANIFEST)
    manifest = RunManifest.from_json(text)
    assert manifest.to_json() == text
    assert (
        manifest.settings.host_workers == 1
        and manifest.settings.host_mode == "threads"
        and manifest.settings.ray is None
    )
    assert [(d, r.status) for d, r in sorted(manifest.dates.items())] == [
        ("2024-01-04", "ok"),
        ("2024-01-05", "no_data"),
    ]


def _edited(edit) -> str:
    doc = json.loads(GOLDEN)
    edit(doc)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["dates"]["2024-01-03"].update(gpu="h100"),
            r"unknown key\(s\) \['gpu'\] in the entry of 2024-01-03",
        ),
        (lambda d: d["dates"]["2024-01-05"].pop("worker"), r"missing key\(s\) \['worker'\] in the entry of 2024-01-05"),
        (
            lambda d: d["dates"]["2024-01-03"].update(rows="1444"),
            r"the entry of 2024-01-03: rows must be int, got '1444'",
        ),
        (
            lambda d: d["dates"]["2024-01-03"].update(status="done"),
            r"the entry of 2024-01-03: status must be one of ok, ",
        ),
        (
            lambda d: d["dates"]["2024-01-03"].update(date="2024-01-04"),
            r"the entry of 2024-01-03 says date '2024-01-04'",
        ),
        (lambda d: d["settings"].update(sample_every=10), r"unknown key\(s\) \['sample_every'\] in settings"),
        (lambda d: d["settings"].pop("key"), r"missing key\(s\) \['key'\] in settings"),
        (lambda d: d["settings"].update(dense=0), r"settings: dense must be bool, got 0"),
        (lambda d: d["settings"].update(stride=True), r"settings: stride must be int, got True"),
        (lambda d: d["settings"].update(format="xml"), r"settings: format must be one of csv, parquet"),
        (lambda d: d["settings"].update(host_workers=2), r"settings: host_workers and host_mode go together"),
        (lambda d: d["settings"]["ray"].pop("threads"), r"missing key\(s\) \['threads'\] in settings.ray"),
        (lambda d: d["settings"].update(ray=[]), r"settings.ray is list, expected an object"),
        (lambda d: d.update(notes="x"), r"unknown key\(s\) \['notes'\] in the manifest"),
        (lambda d: d.pop("versions"), r"missing key\(s\) \['versions'\] in the manifest"),
        (lambda d: d["versions"].update(torch=2), r"the manifest: versions must be dict\[str, str\], got"),
    ],
)
def test_strict_loading_names_the_file_the_key_and_the_fix(edit, message: str) -> None:
    with pytest.raises(RunFormatError, match=message) as caught:
        RunManifest.from_json(_edited(edit), SOURCE)
    text = str(caught.value)
    assert text.startswith(SOURCE) and text.endswith("tthf-run replaces it and redoes its dates")


def test_optional_settings_may_be_absent_and_are_not_written_while_unset() -> None:
    doc = json.loads(GOLDEN)
    del doc["settings"]["ray"]  # a Ray call with nothing to compute sizes no workers
    manifest = RunManifest.from_json(json.dumps(doc), SOURCE)
    assert manifest.settings.ray is None
    assert json.loads(manifest.to_json()) == doc


def test_settings_are_validated_on_construction() -> None:
    good = golden().settings
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        dataclasses.replace(good, stride=0)
    with pytest.raises(ValueError, match="host_workers must be >= 1, got 0"):
        dataclasses.replace(good, host_workers=0, host_mode="threads")
    with pytest.raises(ValueError, match=r"gpus_per_worker must be float, got '1'"):
        dataclasses.replace(good.ray, gpus_per_worker="1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        good.stride = 2  # type: ignore[misc]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> runs.Run:
    from tthf.engine.testing import make_data, make_run

    base = tmp_path_factory.mktemp("manifest")
    return make_run(str(base / "runs"), make_data(base / "data"))


def test_load_reads_the_runs_manifest_or_none(run: runs.Run) -> None:
    run.store.delete(runs.INFERENCE_MANIFEST)
    assert RunManifest.load(run) is None
    run.write_text(runs.INFERENCE_MANIFEST, GOLDEN)
    assert RunManifest.load(run) == golden()


#: the date entries of a tthf before e02a327 had no executor and worker
OLDER = _edited(lambda d: [(entry.pop("executor"), entry.pop("worker")) for entry in d["dates"].values()])


@pytest.mark.parametrize(
    ("text", "says"),
    [(OLDER, "missing key(s) ['executor', 'worker'] in the entry of 2024-01-03"), (GOLDEN[:100], "is not valid JSON")],
)
def test_load_logs_a_manifest_that_does_not_load_and_ignores_it(
    run: runs.Run, caplog: pytest.LogCaptureFixture, text: str, says: str
) -> None:
    run.write_text(runs.INFERENCE_MANIFEST, text)
    with caplog.at_level(logging.WARNING, logger="tthf.run"):
        assert RunManifest.load(run) is None
    assert f"{run.store.uri(runs.INFERENCE_MANIFEST)}" in caplog.text and says in caplog.text
    assert "tthf-run replaces it and redoes its dates" in caplog.text
