"""``tthf-explain``: which inputs one or several forecasts came from (attributions over lag x feature)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING

from tthf.cli._common import (
    add_data_option,
    add_endpoint_option,
    add_json_option,
    add_logging_option,
    add_run_options,
    command_parser,
    open_data_from_args,
    open_run_from_args,
    run_cli,
)
from tthf.engine.store import open_store
from tthf.errors import UsageError

if TYPE_CHECKING:
    from tthf.engine.explain.forecasts import Explained

EPILOG = """\
A forecast is (--date, --symbol, --minute): the window whose last minute starts at HH:MM
exchange time, the row tthf-run writes with that ts. --symbols and --minutes take
comma-separated lists and explain every combination in one call.
tthf's own runs are explained by integrated gradients (Captum) on the fp32 PyTorch reference,
with the completeness check (the attributions add up to the forecast's difference from the
baseline forecast); an ONNX-only import by occlusion of each (lag, feature) cell through its
serving backend. The baseline is every feature at its scaler's centre. Writes one heatmap
PNG per forecast and DATE_explain.json to --out. docs/evaluation.md ("Explanations") has
the details.
Exit code: 0, or 1 when a completeness check failed; 2+ on usage, data or store errors.

examples:
  tthf-explain --run jennifer --date 2024-02-27 --symbol SYM007 --minute 10:30
  tthf-explain --run jennifer --date 2024-02-27 --symbols SYM001,SYM002 --minutes 10:30,14:00 --json
"""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("tthf-explain", "Attribute forecasts to their inputs: which features at which lags.", EPILOG)
    add_run_options(p)
    p.add_argument("--date", required=True, help="the forecasts' date, YYYY-MM-DD")
    p.add_argument("--symbol", "--symbols", dest="symbols", required=True, help="a symbol, or several comma-separated")
    p.add_argument("--minute", "--minutes", dest="minutes", required=True, help="HH:MM exchange time, or several")
    p.add_argument("--top", type=int, default=8, help="cells listed per forecast and output (default 8)")
    p.add_argument("--out", default=".", help="folder (local or s3://) for the heatmaps and the JSON (default: .)")
    add_data_option(p, of_run=True)
    add_json_option(p)
    add_endpoint_option(p)
    add_logging_option(p)
    return p


def format_explained(result: Explained, top: int) -> str:
    """Each forecast's outputs against the baseline's, its top cells per output, the completeness check."""
    a, check = result.attributions, result.completeness
    lines = [f"{result.run} {result.date}: {a.method}, baseline = every feature at its scaler's centre"]
    for i, f in enumerate(result.forecasts):
        lines.append(f"\n{f.symbol} {f.minute} (ts {f.ts})")
        for name in a.cells:
            lines.append(f"  {name:<9} {a.outputs[name][i]:.5g}  (baseline {a.baseline[name][i]:.5g})")
            cells = ", ".join(f"{feat}@lag{lag} {value:+.3g}" for feat, lag, value in result.top(i, name, top))
            lines.append(f"            top: {cells}")
    if check["checked"]:
        verdict = "holds" if check["ok"] else "FAILS"
        lines.append(
            f"\ncompleteness {verdict}: attributions add up to output - baseline within {check['rtol']:g} relative "
            f"(floor {check['floor_scales']:g} output scales) for every forecast and output"
        )
    else:
        lines.append(f"\nno completeness check: {check['reason']}")
    lines.extend(f"wrote {uri}" for uri in result.files)
    return "\n".join(lines)


def body(args: argparse.Namespace) -> int:
    from tthf.engine.explain.forecasts import explain_forecasts

    try:
        date = dt.date.fromisoformat(args.date)
    except ValueError as exc:
        raise UsageError(f"--date {args.date!r} is not YYYY-MM-DD") from exc
    run = open_run_from_args(args)
    data = open_data_from_args(args, run)
    out = open_store(args.out, endpoint_url=args.s3_endpoint_url)
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    minutes = [m.strip() for m in args.minutes.split(",") if m.strip()]
    result = explain_forecasts(run, data, date, symbols, minutes, out)
    if args.json:
        print(json.dumps(result.to_json(args.top), indent=1))
    else:
        print(format_explained(result, args.top))
    return 0 if result.completeness.get("ok", True) else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-explain", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
