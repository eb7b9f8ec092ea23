"""Numeric validation of a compiled artifact against the PyTorch reference.

In the spirit of HF Optimum's exporter checks and NVIDIA Polygraphy's comparisons:
the artifact must produce exactly the reference's output names, each with the
reference's shape, and every element must satisfy

    |artifact - reference| <= atol + rtol * |reference|

with ``atol``/``rtol`` per output and precision (``tthf.engine.model.interface.TOLERANCES``, scaled by
the run's output scales; docs/export.md says where they come from). Each comparison records the max absolute error, the max
relative error ``|d| / (|reference| + atol)`` (bounded near zero, unlike ``|d|/|ref|``),
the 99.9th percentile of the absolute error and how many elements broke the bound.
A failure names the artifact, the input set, the output and those numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import Tolerance, tolerances
from tthf.errors import ValidationError

__all__ = ["Comparison", "compare", "enforce", "format_table", "summarize", "tolerances"]

QUANTILE = 99.9


@dataclass(frozen=True)
class Comparison:
    """One output of one artifact on one input set."""

    artifact: str
    backend: str
    inputs: str
    batch: int
    output: str
    precision: str
    max_abs: float
    max_rel: float
    q_abs: float
    violations: int
    atol: float
    rtol: float

    @property
    def passed(self) -> bool:
        return self.violations == 0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed, "quantile": QUANTILE}


def compare(
    reference: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    *,
    artifact: str,
    backend: str,
    inputs: str,
    precision: str,
    tolerance: Mapping[str, Tolerance],
) -> list[Comparison]:
    """Compare every output; names, shapes and non-finite values fail at once."""
    where = f"{artifact} ({backend}) on {inputs}"
    if set(got) != set(reference):
        raise ValidationError(
            f"{where}: outputs {sorted(got)} but the reference has {sorted(reference)}; "
            "the artifact was exported from another model version, re-run tthf-export"
        )
    results = []
    for name in OUTPUT_NAMES if set(reference) == set(OUTPUT_NAMES) else sorted(reference):
        ref = np.asarray(reference[name], dtype=np.float64)
        out = np.asarray(got[name])
        if out.shape != ref.shape:
            raise ValidationError(
                f"{where}: output {name!r} has shape {out.shape}, the reference {ref.shape}; re-run tthf-export"
            )
        out = out.astype(np.float64)
        if not np.isfinite(out).all():
            bad = int(np.count_nonzero(~np.isfinite(out)))
            raise ValidationError(
                f"{where}: output {name!r} has {bad} non-finite value(s) where the reference is finite; "
                "the artifact overflowed (fp16 range?) - re-run tthf-export, and report it if it persists"
            )
        tol = tolerance[name]
        diff = np.abs(out - ref)
        results.append(
            Comparison(
                artifact=artifact,
                backend=backend,
                inputs=inputs,
                batch=int(ref.shape[0]) if ref.ndim else 1,
                output=name,
                precision=precision,
                max_abs=float(diff.max(initial=0.0)),
                max_rel=float((diff / (np.abs(ref) + tol.atol)).max(initial=0.0)),
                q_abs=float(np.percentile(diff, QUANTILE)) if diff.size else 0.0,
                violations=int(np.count_nonzero(diff > tol.atol + tol.rtol * np.abs(ref))),
                atol=tol.atol,
                rtol=tol.rtol,
            )
        )
    return results


def enforce(results: list[Comparison]) -> None:
    """Raise ``ValidationError`` naming every failing output with its numbers."""
    failed = [r for r in results if not r.passed]
    if failed:
        lines = [
            f"{r.artifact} ({r.backend}) on {r.inputs}: {r.output} max_abs={r.max_abs:.3g} "
            f"max_rel={r.max_rel:.3g} p{QUANTILE:g}={r.q_abs:.3g}, {r.violations}/{r.batch} beyond "
            f"atol={r.atol:g} + rtol={r.rtol:g}*|ref|"
            for r in failed
        ]
        raise ValidationError(
            "validation failed (" + "; ".join(lines) + "). The compiled artifact disagrees with the PyTorch "
            "reference beyond the documented tolerance (docs/export.md); check the exporter and TensorRT versions "
            "in export/manifest.json and report this with that manifest"
        )


def summarize(results: list[Comparison]) -> list[Comparison]:
    """Worst row per (artifact, backend, inputs kind, output): what the printed table shows."""
    worst: dict[tuple[str, str, str, str], Comparison] = {}
    for r in results:
        key = (r.artifact, r.backend, r.inputs.split("@")[0], r.output)
        if key not in worst or (r.violations, r.max_rel) > (worst[key].violations, worst[key].max_rel):
            worst[key] = r
    return list(worst.values())


def format_table(results: list[Comparison]) -> str:
    """A short fixed-width table, the worst case of each output over the batch sizes."""
    header = (
        "artifact",
        "backend",
        "inputs",
        "output",
        "max_abs",
        "max_rel",
        f"p{QUANTILE:g}_abs",
        "atol",
        "rtol",
        "ok",
    )
    rows = [header] + [
        (
            r.artifact,
            r.backend,
            r.inputs.split("@")[0],
            r.output,
            f"{r.max_abs:.2e}",
            f"{r.max_rel:.2e}",
            f"{r.q_abs:.2e}",
            f"{r.atol:.0e}",
            f"{r.rtol:.0e}",
            "yes" if r.passed else "NO",
        )
        for r in summarize(results)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
