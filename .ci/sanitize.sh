#!/usr/bin/env bash
# Builds the C++ kernel (windows and features) with AddressSanitizer +
# UndefinedBehaviorSanitizer (CMake build type Sanitize, build/sanitize) and runs the
# kernel's tests against that build: tests/test_windows.py and
# tests/features/test_feature_kernel.py. Any finding aborts the run with a non-zero exit code.
# Usage: bash .ci/sanitize.sh   (from the project's venv; GCC or Clang)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build/sanitize"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Sanitize \
  -DPython_EXECUTABLE="$(command -v python)" >/dev/null
cmake --build "$build" -j "$(nproc)"

# The interpreter is not instrumented, so the ASan runtime must be loaded first, with
# libstdc++ beside it (ASan can only intercept C++ throws it finds at start-up).
libasan="$("${CXX:-c++}" -print-file-name=libasan.so)"
libstdcxx="$("${CXX:-c++}" -print-file-name=libstdc++.so)"
[[ -f "$libasan" ]] || { echo "sanitize: libasan.so not found (install the compiler's ASan runtime)" >&2; exit 1; }
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Put the sanitized module first on tthf.engine's search path, then run the tests.
# tthf itself is whatever this interpreter imports (the installed package in CI, the
# source tree in development); the build folder as working directory keeps the
# checkout's tthf/ folder from shadowing it.
cd "$build"
LD_PRELOAD="$libasan $libstdcxx" python - "$build" "$root/tests/test_windows.py" \
  "$root/tests/features/test_feature_kernel.py" <<'PY'
import sys

import tthf.engine

build, *tests = sys.argv[1:]
tthf.engine.__path__.insert(0, build)
import tthf.engine._kernels as kernel

assert kernel.__file__.startswith(build), f"not the sanitized build: {kernel.__file__}"
print(f"sanitize: testing {kernel.__file__}")
import pytest

sys.exit(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests]))
PY
