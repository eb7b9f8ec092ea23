"""Numeric validation of a compiled artifact against the PyTorch reference.

In the spirit of HF Optimum's exporter checks and NVIDIA Polygraphy's comparisons:
the artifact must produce exactly the reference's output names, each with the
reference's shape, and meet its precision's bar (``tthf.engine.model.interface.bars``;
docs/export.md says where each comes from):

- fp32 and fp16, element bars: every element satisfies
  ``|artifact - reference| <= atol + rtol * |reference|``;
- reduced CPU precisions (bf16), spread bars: the error's 99.9th percentile and its max,
  each divided by the reference's standard deviation on the input set (floored), stay
  under the bar: "one element in 4096 beyond atol" says little about a precision whose
  rounding is 8x fp16's.

Each comparison records the max absolute error, the max relative error
``|d| / (|reference| + atol)`` (bounded near zero, unlike ``|d|/|ref|``), the 99.9th
percentile of the absolute error, the reference's spread and the elements beyond an
element bar. A failure names the artifact, the input set, the output and those numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import Bar, SpreadBar, bars, tolerances
from tthf.errors import ValidationError

__all__ = ["Comparison", "bars", "compare", "enforce", "failures", "format_table", "summarize", "tolerances"]

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
    violations: int  # elements beyond an element bar (0 under a spread bar)
    atol: float
    rtol: float
    spread: float = 0.0  # the reference's standard deviation on the input set, floored (spread bars)
    q_bar: float = 0.0  # spread bars: allowed p99.9 |error| / spread; 0 for an element bar
    max_bar: float = 0.0  # spread bars: allowed max |error| / spread

    @property
    def q_ratio(self) -> float:
        return self.q_abs / self.spread if self.spread else 0.0

    @property
    def max_ratio(self) -> float:
        return self.max_abs / self.spread if self.spread else 0.0

    @property
    def passed(self) -> bool:
        if self.q_bar:
            return self.q_ratio <= self.q_bar and self.max_ratio <= self.max_bar
        return self.violations == 0

    def severity(self) -> tuple[bool, float]:
        """Orders comparisons of one output, worst last: failed ones, then by how close to their bar."""
        if self.q_bar:
            return (not self.passed, max(self.q_ratio / self.q_bar, self.max_ratio / self.max_bar))
        return (not self.passed, float(self.violations) + self.max_rel)

    def bar(self) -> str:
        """The bar and, for a spread bar, where the errors stand against it."""
        if self.q_bar:
            return (
                f"spread {self.spread:.1e}: p{QUANTILE:g} {self.q_ratio:.2%} (bar {self.q_bar:.2%}), "
                f"max {self.max_ratio:.2%} (bar {self.max_bar:.2%})"
            )
        return f"atol {self.atol:.0e} + rtol {self.rtol:.0e} x |ref|, {self.violations} beyond"

    def verdict(self) -> str:
        """The numbers that decide, as one phrase."""
        if self.q_bar:
            return (
                f"p{QUANTILE:g}={self.q_ratio:.2%} and max={self.max_ratio:.2%} of the reference's spread "
                f"{self.spread:.3g} (bar {self.q_bar:.2%} and {self.max_bar:.2%})"
            )
        return (
            f"max_abs={self.max_abs:.3g} max_rel={self.max_rel:.3g} p{QUANTILE:g}={self.q_abs:.3g}, "
            f"{self.violations}/{self.batch} beyond atol={self.atol:g} + rtol={self.rtol:g}*|ref|"
        )

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
    tolerance: Mapping[str, Bar],
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
        results.append(_measure(ref, out, tolerance[name], artifact, backend, inputs, name, precision))
    return results


def _measure(
    ref: np.ndarray, out: np.ndarray, bar: Bar, artifact: str, backend: str, inputs: str, name: str, precision: str
) -> Comparison:
    """The statistics of one output against its bar (float64 throughout): an element bar's violations,
    or a spread bar's floored spread and ratios."""
    diff = np.abs(out - ref)
    if isinstance(bar, SpreadBar):
        atol = rtol = max_rel = 0.0
        violations = 0
        spread = (max(float(ref.std()) if ref.size else 0.0, bar.floor), bar.q_ratio, bar.max_ratio)
    else:
        atol, rtol = bar.atol, bar.rtol
        max_rel = float((diff / (np.abs(ref) + atol)).max(initial=0.0))
        violations = int(np.count_nonzero(diff > atol + rtol * np.abs(ref)))
        spread = (0.0, 0.0, 0.0)
    return Comparison(
        artifact=artifact,
        backend=backend,
        inputs=inputs,
        batch=int(ref.shape[0]) if ref.ndim else 1,
        output=name,
        precision=precision,
        max_abs=float(diff.max(initial=0.0)),
        max_rel=max_rel,
        q_abs=float(np.percentile(diff, QUANTILE)) if diff.size else 0.0,
        violations=violations,
        atol=atol,
        rtol=rtol,
        spread=spread[0],
        q_bar=spread[1],
        max_bar=spread[2],
    )


def failures(results: list[Comparison]) -> str:
    """One phrase per failing output, ``; ``-joined (empty when everything passed)."""
    return "; ".join(
        f"{r.artifact} ({r.backend}) on {r.inputs}: {r.output} {r.verdict()}" for r in results if not r.passed
    )


def enforce(results: list[Comparison]) -> None:
    """Raise ``ValidationError`` naming every failing output with its numbers."""
    if failed := failures(results):
        raise ValidationError(
            "validation failed (" + failed + "). The compiled artifact disagrees with the PyTorch "
            "reference beyond the documented tolerance (docs/export.md); check the exporter and TensorRT versions "
            "in export/manifest.json and report this with that manifest"
        )


def summarize(results: list[Comparison]) -> list[Comparison]:
    """Worst row per (artifact, backend, inputs kind, output): what the printed table shows."""
    worst: dict[tuple[str, str, str, str], Comparison] = {}
    for r in results:
        key = (r.artifact, r.backend, r.inputs.split("@")[0], r.output)
        if key not in worst or r.severity() > worst[key].severity():
            worst[key] = r
    return list(worst.values())


def format_table(results: list[Comparison]) -> str:
    """A short fixed-width table, the worst case of each output over the batch sizes."""
    header = ("artifact", "backend", "inputs", "output", "max_abs", f"p{QUANTILE:g}_abs", "bar", "ok")
    rows = [header] + [
        (
            r.artifact,
            r.backend,
            r.inputs.split("@")[0],
            r.output,
            f"{r.max_abs:.2e}",
            f"{r.q_abs:.2e}",
            r.bar(),
            "yes" if r.passed else "NO",
        )
        for r in summarize(results)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
