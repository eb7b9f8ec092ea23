"""The run folder: every file in it, and how ``--run NAME`` finds it.

Layout: ``{store}/{experiment}/{model_type}/{run_id}/`` holding the files named by the
constants below; no other module spells a run-folder path. This module moves bytes and
text, resolves names and opens the run's model and scalers; the model, scaler and
manifest modules own the formats of their files.

Matching (``find_run``): a run whose ``run_id`` equals the name wins; otherwise the runs
whose ``run_id`` starts with it; exactly one is used, none or several is an error that
lists the candidates. ``experiment`` / ``model_type`` narrow the search.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tthf.engine.config import RunConfig
from tthf.engine.features.scalers import Scalers
from tthf.engine.store import Store, StoreLocator, as_store, open_store
from tthf.errors import AmbiguousRunError, KeyNotFoundError, RunFormatError, RunNotFoundError, StoreError, UsageError

if TYPE_CHECKING:  # the network pulls in torch; only load_model needs it
    from tthf.engine.model.network import ThreeHeadedTransformer

CONFIG = "config.json"
CHECKPOINT = "checkpoint.safetensors"
SCALERS = "scalers.json"
METRICS = "metrics.json"
#: an imported run's model (tthf-import): the user's network wrapped with the output mapping, tthf's interface
IMPORTED_MODEL = "model.onnx"
#: an imported run's import record: the spec, the sources' sha256, the validation at import
IMPORT_RECORD = "import.json"
EXPORT_DIR = "export"
INFERENCE_DIR = "inference"
EVALUATION_DIR = "evaluation"
#: ``export/manifest.json``: what was exported from what (tthf.engine.artifacts reads it)
EXPORT_MANIFEST = f"{EXPORT_DIR}/manifest.json"
#: the prediction set ``tthf-run`` writes without ``--predictions``: ``inference/`` itself; a named
#: set NAME (``--predictions NAME``) is the folder ``inference/NAME/``, with its own files and manifest
DEFAULT_PREDICTIONS = "default"
#: ``inference/manifest.json``: each predicted date's outcome (tthf.engine.inference_manifest)
INFERENCE_MANIFEST = f"{INFERENCE_DIR}/manifest.json"
#: the rolling record of tthf-eval --rolling (tthf.engine.evaluation.history), its page and its Prometheus file
HISTORY = f"{EVALUATION_DIR}/history.parquet"
HISTORY_PAGE = f"{EVALUATION_DIR}/history.html"
HISTORY_METRICS = f"{EVALUATION_DIR}/metrics.prom"
#: artifact names inside ``export/`` (the export manifest keys its artifacts by these)
FP32_ONNX = "model.onnx"
FP16_ONNX = "model_fp16.onnx"
#: the int8 variant (``tthf-export --int8``): an OpenVINO IR, its graph and its weights
INT8_XML = "model_int8.xml"
INT8_BIN = "model_int8.bin"


def export_key(name: str) -> str:
    """The key of artifact ``name`` (``model.onnx``, an engine, a timing cache) in the run folder."""
    return f"{EXPORT_DIR}/{name}"


def engine_name(sm: str, device: str, tensorrt_version: str) -> str:
    """TensorRT engine file for one GPU architecture (``sm90``), GPU model and TensorRT version."""
    return f"model_fp16.{sm}.{device}.trt{tensorrt_version}.engine"


def timing_cache_name(sm: str, device: str, tensorrt_version: str) -> str:
    """TensorRT timing cache beside the engine; kept across exports (it does not depend on the weights)."""
    return f"timing.{sm}.{device}.trt{tensorrt_version}.cache"


def is_timing_cache(name: str) -> bool:
    return name.startswith("timing.")


_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_predictions(name: str) -> str:
    """A prediction set's name is one folder name under ``inference/`` (no dots: never a file's name)."""
    if not _SET_NAME.match(name):
        raise UsageError(
            f"invalid prediction set {name!r}: use up to 64 letters, digits, '_' or '-', starting with a letter "
            f"or digit ({DEFAULT_PREDICTIONS!r} is {INFERENCE_DIR}/ itself)"
        )
    return name


def predictions_dir(predictions: str = DEFAULT_PREDICTIONS) -> str:
    """The folder of a prediction set: ``inference/`` for the default, ``inference/NAME`` for a named one."""
    if check_predictions(predictions) == DEFAULT_PREDICTIONS:
        return INFERENCE_DIR
    return f"{INFERENCE_DIR}/{predictions}"


def inference_manifest_key(predictions: str = DEFAULT_PREDICTIONS) -> str:
    """The manifest of a prediction set (``INFERENCE_MANIFEST`` for the default one)."""
    return f"{predictions_dir(predictions)}/manifest.json"


def output_key(day: dt.date, fmt: str, predictions: str = DEFAULT_PREDICTIONS) -> str:
    """The predictions file of one date in a prediction set."""
    return f"{predictions_dir(predictions)}/{day.isoformat()}.{fmt}"


_OUTPUT_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(\w+)$")


def parse_output_key(key: str, predictions: str = DEFAULT_PREDICTIONS) -> tuple[dt.date, str] | None:
    """``output_key``'s inverse: the date and format of a predictions file's key in the set ``predictions``,
    None for any other key (another set's files included).

    The format is the file's extension, whichever it is: ``tthf.engine.predictions.FORMATS`` says
    which ones this tthf reads.
    """
    folder, _, name = key.rpartition("/")
    match = _OUTPUT_FILE.match(name) if folder == predictions_dir(predictions) else None
    if match is None:
        return None
    try:
        return dt.date.fromisoformat(match[1]), match[2]
    except ValueError:  # inference/2024-13-45.csv is not a date's file
        return None


DEFAULT_EXPERIMENT = "demo"
DEFAULT_MODEL_TYPE = "three_headed_transformer"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LIST_LIMIT = 20


def check_name(kind: str, value: str) -> str:
    """Experiment, model type and run id are single folder names."""
    if not _NAME.match(value):
        raise UsageError(
            f"invalid {kind} {value!r}: use letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class RunRef:
    """One run folder; ``store`` is rooted at it."""

    experiment: str
    model_type: str
    run_id: str
    store: Store = field(compare=False, repr=False)
    root: str = field(default="", compare=False, repr=False)  # URI of the run store the run lives in

    @property
    def name(self) -> str:
        return f"{self.experiment}/{self.model_type}/{self.run_id}"

    @property
    def uri(self) -> str:
        return self.store.uri()

    def locator(self) -> RunLocator:
        """How another process opens this run (a worker process, a Ray actor): plain values, picklable."""
        return RunLocator(self.experiment, self.model_type, self.run_id, self.store.locator(), self.root)


@dataclass(frozen=True)
class RunLocator:
    """A run folder as plain values: its names and its folder's ``StoreLocator``."""

    experiment: str
    model_type: str
    run_id: str
    folder: StoreLocator
    root: str  # URI of the run store the run lives in

    def open(self) -> Run:
        return Run.open(RunRef(self.experiment, self.model_type, self.run_id, self.folder.open(), self.root))


def _listing(refs: list[RunRef]) -> str:
    names = [r.name for r in refs[:_LIST_LIMIT]]
    more = f" ... and {len(refs) - _LIST_LIMIT} more" if len(refs) > _LIST_LIMIT else ""
    return ", ".join(names) + more


def list_runs(store: Store | str, *, experiment: str | None = None, model_type: str | None = None) -> list[RunRef]:
    """Every run folder in the store (optionally within one experiment / model type), sorted."""
    root = as_store(store)
    refs = []
    for exp in [experiment] if experiment else root.list_dirs(""):
        for mt in [model_type] if model_type else root.list_dirs(exp):
            for run_id in root.list_dirs(f"{exp}/{mt}"):
                refs.append(RunRef(exp, mt, run_id, root.child(f"{exp}/{mt}/{run_id}"), root.uri()))
    return refs


def find_run(store: Store | str, run: str, *, experiment: str | None = None, model_type: str | None = None) -> RunRef:
    """Resolve ``run`` (a run_id or a prefix of one) to exactly one run folder."""
    root = as_store(store)
    if not run:
        raise UsageError("empty run name: pass --run with a run id or a prefix of one")
    refs = list_runs(root, experiment=experiment, model_type=model_type)
    scope = "/".join(p for p in (experiment, model_type) if p)
    where = f"{root.uri()}" + (f" (within {scope})" if scope else "")
    exact = [r for r in refs if r.run_id == run]
    matches = exact or [r for r in refs if r.run_id.startswith(run)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        existing = (
            f"runs there: {_listing(refs)}"
            if refs
            else "there are no runs there; train one with tthf-train or import one with tthf-import"
        )
        raise RunNotFoundError(f"no run matches {run!r} in {where}; {existing}")
    kind = "runs named" if exact else "runs start with"
    raise AmbiguousRunError(
        f"{len(matches)} {kind} {run!r} in {where}: {_listing(matches)}; "
        "give a longer prefix or narrow with --experiment / --model-type"
    )


def open_run(
    store: Store | str,
    run: str,
    *,
    experiment: str | None = None,
    model_type: str | None = None,
    endpoint_url: str | None = None,
) -> Run:
    """Find run ``run`` (an id or a unique prefix) in ``store`` and open it."""
    root = open_store(store, endpoint_url=endpoint_url) if isinstance(store, str) else store
    return Run.open(find_run(root, run, experiment=experiment, model_type=model_type))


def create_run(store: Store | str, experiment: str, model_type: str, run_id: str, *, overwrite: bool = False) -> RunRef:
    """Claim a new run folder. With ``overwrite`` an existing run's files are deleted first."""
    for kind, value in (("experiment", experiment), ("model type", model_type), ("run id", run_id)):
        check_name(kind, value)
    root = as_store(store)
    ref = RunRef(experiment, model_type, run_id, root.child(f"{experiment}/{model_type}/{run_id}"), root.uri())
    existing = ref.store.list("")
    if existing and not overwrite:
        raise StoreError(
            f"run {ref.name} already exists at {ref.uri}; pass --overwrite to replace it or choose another name"
        )
    for key in existing:
        ref.store.delete(key)
    return ref


class Run:
    """An opened run: its validated config plus atomic access to its files."""

    def __init__(self, ref: RunRef, config: RunConfig) -> None:
        self.ref = ref
        self.config = config

    @property
    def store(self) -> Store:
        return self.ref.store

    @classmethod
    def open(cls, ref: RunRef) -> Run:
        try:
            text = ref.store.read_text(CONFIG)
        except KeyNotFoundError as exc:
            raise RunFormatError(
                f"{ref.uri} is not a tthf run (no {CONFIG}): for a model trained elsewhere, import it with "
                f"`tthf-import --spec SPEC.toml` (docs/import.md); a tthf-train run that did not finish "
                f"is re-created with `tthf-train --overwrite`"
            ) from exc
        return cls(ref, RunConfig.from_json(text, source=ref.store.uri(CONFIG)))

    @classmethod
    def new(cls, ref: RunRef, config: RunConfig) -> Run:
        """Write ``config.json`` into a run folder claimed with ``create_run``."""
        ref.store.write_text(CONFIG, config.to_json())
        return cls(ref, config)

    def load_scalers(self) -> Scalers:
        """``scalers.json``, strictly parsed."""
        return Scalers.from_json(self.read_text(SCALERS), source=self.store.uri(SCALERS))

    def load_model(self) -> ThreeHeadedTransformer:
        """The PyTorch reference network from ``checkpoint.safetensors`` (no pickle), in eval mode on the CPU."""
        from tthf.engine.model.network import load_checkpoint

        if self.config.imported is not None:
            raise RunFormatError(
                f"run {self.ref.name} was imported: its model is {IMPORTED_MODEL}, not a tthf checkpoint, so the "
                f"torch backends cannot serve it; export it (tthf-export --run {self.ref.run_id}) and use "
                "--backend openvino, onnxruntime or tensorrt"
            )
        if not self.exists(CHECKPOINT):
            raise RunFormatError(
                f"run {self.ref.name} at {self.ref.uri} has no {CHECKPOINT}; re-create it with tthf-train"
            )
        return load_checkpoint(self.read_bytes(CHECKPOINT), self.config.model, source=self.store.uri(CHECKPOINT))

    def sha256(self, key: str) -> str:
        """sha256 of one file of the run ("" when it does not exist)."""
        return hashlib.sha256(self.read_bytes(key)).hexdigest() if self.exists(key) else ""

    def exists(self, key: str) -> bool:
        return self.store.exists(key)

    def read_bytes(self, key: str) -> bytes:
        return self.store.read_bytes(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        self.store.write_bytes(key, data)

    def read_text(self, key: str) -> str:
        return self.store.read_text(key)

    def write_text(self, key: str, text: str) -> None:
        self.store.write_text(key, text)

    def __repr__(self) -> str:
        return f"Run({self.ref.name!r}, {self.ref.uri!r})"
