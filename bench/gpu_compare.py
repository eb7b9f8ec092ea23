"""Compare two tthf-run prediction files, output by output, at one precision's tolerances.

    python bench/gpu_compare.py REFERENCE GOT --store STORE --run NAME [--precision fp16] [--json OUT]

``bench/gpu_check.sh`` runs it on the same dense day predicted by ``--backend tensorrt``
and by the CPU reference (``--backend torch`` with the GPU hidden). Both files must have
exactly the same (ts, symbol) rows with the same ``source_ts``; then every value must
satisfy ``|got - reference| <= atol + rtol * |reference|`` with the run's tolerances for
the precision (``tthf.engine.model.interface.tolerances``), through the export's own
``compare``, so this check and export validation cannot disagree on what "within tolerance"
means. Exit code 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import Tolerance, tolerances
from tthf.engine.predictions import decode
from tthf.engine.runs import Run, find_run
from tthf.errors import ValidationError
from tthf.export.validate import Comparison, compare, format_table

KEYS = ["ts", "symbol"]


@dataclass
class FileComparison:
    """Row problems (rows in one file only, source_ts differing) and one Comparison per output."""

    rows: int
    problems: list[str] = field(default_factory=list)
    outputs: list[Comparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and bool(self.outputs) and all(c.passed for c in self.outputs)

    def to_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "passed": self.passed,
            "problems": self.problems,
            "outputs": [c.to_dict() for c in self.outputs],
        }


def read_predictions(path: Path) -> pl.DataFrame:
    return decode(path.read_bytes(), "parquet" if path.suffix == ".parquet" else "csv")


def row_problems(ref: pl.DataFrame, got: pl.DataFrame) -> list[str]:
    problems = []
    for name, frame in (("reference", ref), ("compared", got)):
        duplicated = frame.height - frame.select(KEYS).unique().height
        if duplicated:
            problems.append(f"{duplicated} duplicated (ts, symbol) rows in the {name} file")
    only_ref = ref.join(got, on=KEYS, how="anti").height
    only_got = got.join(ref, on=KEYS, how="anti").height
    if only_ref or only_got:
        problems.append(f"{only_ref} rows only in the reference, {only_got} rows only in the compared file")
    return problems


def compare_predictions(
    ref: pl.DataFrame, got: pl.DataFrame, tol: dict[str, Tolerance], *, precision: str, label: str = "predictions"
) -> FileComparison:
    """``got`` against ``ref``: the same rows and source_ts, and every output within ``tol``."""
    result = FileComparison(rows=ref.height, problems=row_problems(ref, got))
    both = ref.join(got, on=KEYS, how="inner", suffix="_got").sort(KEYS)
    moved = both.filter(pl.col("source_ts") != pl.col("source_ts_got")).height
    if moved:
        result.problems.append(f"{moved} rows have another source_ts")
    if both.height == 0:
        result.problems.append("no row in common")
        return result
    reference = {n: both[n].to_numpy().astype(np.float32) for n in OUTPUT_NAMES}
    compared = {n: both[f"{n}_got"].to_numpy().astype(np.float32) for n in OUTPUT_NAMES}
    try:
        result.outputs = compare(
            reference,
            compared,
            artifact=label,
            backend="tthf-run",
            inputs=f"{both.height} rows",
            precision=precision,
            tolerance=tol,
        )
    except ValidationError as exc:  # non-finite values
        result.problems.append(str(exc))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Compare two tthf-run prediction files at a precision's tolerances.")
    p.add_argument("reference", type=Path, help="the reference predictions (CSV or Parquet)")
    p.add_argument("got", type=Path, help="the predictions to check")
    p.add_argument("--store", required=True, help="run store of the run whose tolerances apply")
    p.add_argument("--run", required=True, help="the run (its output scales set the tolerances)")
    p.add_argument("--precision", default="fp16", choices=("fp32", "fp16"), help="tolerance set (default: fp16)")
    p.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [str(p) for p in (args.reference, args.got) if not p.is_file()]
    if missing:
        print(f"FAIL: {', '.join(missing)} does not exist (the tthf-run that writes it failed?)")
        return 1
    run = Run.open(find_run(args.store, args.run))
    result = compare_predictions(
        read_predictions(args.reference),
        read_predictions(args.got),
        tolerances(args.precision, run.config.model),
        precision=args.precision,
        label=args.got.name,
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "reference": str(args.reference),
                    "got": str(args.got),
                    "precision": args.precision,
                    **result.to_dict(),
                },
                indent=2,
            )
            + "\n"
        )
    if result.outputs:
        print(format_table(result.outputs))
    for problem in result.problems:
        print(f"MISMATCH: {problem}")
    print(
        f"{'PASS' if result.passed else 'FAIL'}: {args.got} vs {args.reference}, {result.rows:,} rows, "
        f"{args.precision} tolerances"
    )
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
