#!/usr/bin/env bash
# CI for the Swift binding (Linux: no Swift toolchain here).
#  1. Regenerates the Swift sources from the uniffi crate and fails if the committed ones
#     (Sources/B3IQ/B3IQ.swift, include/) are stale: run scripts/generate.sh and commit.
#  2. Generates uniffi's Python bindings for the same library and runs the pytest suite against
#     the shared golden vectors: the same FFI surface Swift calls.
# Idempotent; runnable from any cwd; dev profile with the given CARGO_TARGET_DIR.
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

"$HERE/scripts/generate.sh" python "$WORK/python"
cd "$HERE"
B3IQ_UNIFFI_PY="$WORK/python" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests
