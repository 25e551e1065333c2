#!/usr/bin/env bash
# CI for the Swift binding (Linux: no Swift toolchain here), in two stages:
#  1. verify-only library (`--no-default-features`, no llama.cpp): the golden-vector suite and
#     the error category -> case table through uniffi's generated Python bindings (the same FFI
#     surface Swift calls);
#  2. full library (default feature `host`): regenerate the Swift sources with uniffi and fail
#     if the committed ones (Sources/B3IQ/B3IQ.swift, include/) differ, then every test,
#     including LocalNode + Runtime through uniffi's async exports with the real default model.
# Dev profile with the CARGO_TARGET_DIR given. Idempotent; runnable from any cwd.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export B3IQ_REPO="${B3IQ_REPO:-$(cd "$HERE/../.." && pwd)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/b3iq/target}"
VENV="${B3IQ_BINDINGS_VENV:-$HOME/.cache/b3iq/venv-bindings}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pytest>=7"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "== bindings/swift: verify-only library (golden vectors and error cases through uniffi's Python)"
B3IQ_SWIFT_FEATURES=--no-default-features "$HERE/scripts/generate.sh" python "$WORK/python-verify"
(cd "$HERE" && B3IQ_UNIFFI_PY="$WORK/python-verify" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_uniffi_vectors.py tests/test_uniffi_errors.py)

echo "== bindings/swift: full library (LocalNode, Runtime)"
"$HERE/scripts/generate.sh" swift "$WORK/swift"
stale=0
cmp -s "$WORK/swift/B3IQ.swift" "$HERE/Sources/B3IQ/B3IQ.swift" || stale=1
cmp -s "$WORK/swift/B3IQFFI.h" "$HERE/include/B3IQFFI.h" || stale=1
cmp -s "$WORK/swift/B3IQFFI.modulemap" "$HERE/include/B3IQFFI.modulemap" || stale=1
if [ "$stale" -ne 0 ]; then
  diff -u "$HERE/Sources/B3IQ/B3IQ.swift" "$WORK/swift/B3IQ.swift" | head -40 || true
  echo "bindings/swift: the committed Swift sources are stale; run bindings/swift/scripts/generate.sh and commit" >&2
  exit 1
fi
echo "bindings/swift: generated Swift sources are current"
"$HERE/scripts/generate.sh" python "$WORK/python-full"
cd "$HERE"
B3IQ_UNIFFI_PY="$WORK/python-full" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests
