#!/usr/bin/env bash
# Builds the C++ kernels (windowing and features) for the source tree: engine/_kernels*.so (gitignored),
# importable as tthf.engine._kernels without installing the package.
# Usage: bash csrc/build_dev.sh [Release|Debug]   (run inside the project's venv)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_type="${1:-Release}"
build="$root/build/dev-${build_type,,}"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE="$build_type" \
  -DPython_EXECUTABLE="$(command -v python)" >/dev/null
cmake --build "$build" -j 2
so="$(ls "$build"/_kernels*.so)"
# Replace by rename, never in place: running interpreters keep the old file mapped.
cp -f "$so" "$root/engine/.$(basename "$so").tmp"
mv -f "$root/engine/.$(basename "$so").tmp" "$root/engine/$(basename "$so")"
echo "built $(basename "$so") -> engine/"
