#!/usr/bin/env bash
# The benchmark suite in one command: every benchmark side by side in one pytest run
# (bench/results.json, pytest-benchmark's JSON), then bench/RESULTS.md generated from it.
#   bash bench/run.sh                      # full sizes (TTHF_BENCH_SYMBOLS, TTHF_BENCH_DATES)
#   bash bench/run.sh -k inference         # extra arguments go to pytest
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
# The pytest entry point (not python -m pytest) keeps the source tree off sys.path.
# Its own temp root: pytest prunes all but the 3 newest numbered dirs of a shared one.
basetemp="$(mktemp -d "${TMPDIR:-/tmp}/tthf-bench.XXXXXX")"
trap 'rm -rf "$basetemp"' EXIT
pytest -p no:cacheprovider bench -q --basetemp="$basetemp" --benchmark-json=bench/results.json --benchmark-columns=min,median,max,rounds "$@"
status=$?
if [ -s bench/results.json ]; then
    python bench/report.py bench/results.json bench/RESULTS.md || status=1
fi
exit $status
