#!/usr/bin/env bash
# Regenerates the uniffi bindings from the Rust crate (library mode, dev profile):
#   scripts/generate.sh swift  OUT_DIR   Swift sources + B3IQFFI.h + B3IQFFI.modulemap
#   scripts/generate.sh python OUT_DIR   Python module b3iq_uniffi.py + the shared library
# Without arguments it rewrites the committed Swift sources in Sources/B3IQ and include/.
# B3IQ_SWIFT_FEATURES holds extra cargo flags (e.g. --no-default-features for the verify-only
# library, from which the committed sources are generated today).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/b3iq/target}"
LANGUAGE="${1:-swift}"
OUT="${2:-}"

# shellcheck disable=SC2086
cargo build --quiet --manifest-path "$HERE/Cargo.toml" -p b3iq-swift --lib --bin uniffi-bindgen ${B3IQ_SWIFT_FEATURES:-}
case "$(uname -s)" in
  Darwin) LIB="$CARGO_TARGET_DIR/debug/libb3iq_ffi.dylib" ;;
  *) LIB="$CARGO_TARGET_DIR/debug/libb3iq_ffi.so" ;;
esac
BINDGEN="$CARGO_TARGET_DIR/debug/uniffi-bindgen"

if [ -z "$OUT" ]; then
  [ "$LANGUAGE" = swift ] || { echo "an output directory is required for $LANGUAGE" >&2; exit 2; }
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  (cd "$HERE" && "$BINDGEN" generate --library "$LIB" --language swift --out-dir "$TMP" --no-format)
  mkdir -p "$HERE/Sources/B3IQ" "$HERE/include"
  cp "$TMP/B3IQ.swift" "$HERE/Sources/B3IQ/B3IQ.swift"
  cp "$TMP/B3IQFFI.h" "$TMP/B3IQFFI.modulemap" "$HERE/include/"
  echo "updated Sources/B3IQ/B3IQ.swift and include/"
  exit 0
fi

mkdir -p "$OUT"
(cd "$HERE" && "$BINDGEN" generate --library "$LIB" --language "$LANGUAGE" --out-dir "$OUT" --no-format)
if [ "$LANGUAGE" = python ]; then
  cp "$LIB" "$OUT/"
fi
