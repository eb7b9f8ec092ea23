"""One exception hierarchy for the whole package.

Every message says what went wrong and how to fix it; the CLIs print the message on
one line and exit with ``exit_code`` instead of showing a traceback.
"""

from __future__ import annotations


class TthfError(Exception):
    """Base of every error tthf raises on purpose."""

    exit_code = 1


class UsageError(TthfError):
    """Bad arguments or options (a date spec that does not parse, an unknown backend)."""

    exit_code = 2


class DataError(TthfError):
    """Raw market data that does not follow the contract in docs/data.md.

    Messages name the file, the column, the problem and the fix.
    """

    exit_code = 3


class FeatureMismatchError(DataError):
    """Features at inference do not match the run's ordered feature names."""


class NoDataError(DataError):
    """A requested date has no data under the data root."""


class StaleDataError(TthfError):
    """The data root lacks completed sessions (tthf-check --freshness, tthf-daily): the feed stopped or is late."""

    exit_code = 8


class StoreError(TthfError):
    """Reading or writing the run store or data root failed (local disk or S3)."""

    exit_code = 4


class KeyNotFoundError(StoreError):
    """A key (file or object) does not exist in a store."""


class RunNotFoundError(StoreError):
    """No run matches the requested prefix; the message lists the runs that exist."""


class AmbiguousRunError(StoreError):
    """Several runs match the requested prefix; the message lists them."""


class RunFormatError(StoreError):
    """A run folder is incomplete or its files do not parse (config, checkpoint, scalers)."""


class MixedPrecisionError(StoreError):
    """A prediction set holds files of another precision than the backend asked for (sets never mix them)."""


class ExportError(TthfError):
    """Exporting a checkpoint to ONNX or TensorRT failed."""

    exit_code = 5


class ValidationError(ExportError):
    """A compiled artifact disagrees with the PyTorch reference beyond tolerance."""


class StaleArtifactError(ExportError):
    """An exported artifact does not match the run's checkpoint, GPU or TensorRT version."""


class NotExportedError(StaleArtifactError):
    """The run has no export (or not the artifact asked for); the message gives the export command."""


class RejectedVariantError(ExportError):
    """An optional export variant (a reduced precision) failed its bar at export, or was never validated."""


class ModelImportError(TthfError):
    """``tthf-import`` cannot bring a model in: a spec, model, scaler or output mapping it refuses."""

    exit_code = 7


class BackendError(TthfError):
    """An inference backend cannot run here or failed while running a batch."""

    exit_code = 6


class BackendUnavailableError(BackendError):
    """The requested inference backend cannot run here (missing package, no CUDA device)."""


class ExecutorError(TthfError):
    """The requested executor cannot run here: Ray missing, its cluster unreachable, or too small for the workers."""

    exit_code = 6


class ServiceError(TthfError):
    """The live service (tthf-serve) refused a call or could not be reached: busy, overloaded, wrong token."""

    exit_code = 9
