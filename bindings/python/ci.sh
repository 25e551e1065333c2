#!/usr/bin/env bash
# CI for the Python binding: build the extension in the dev profile (reusing CARGO_TARGET_DIR)
# into its own virtualenv with `maturin develop`, then run the pytest suite (golden vectors,
# jobs and errors, fork safety, the README quick start). Idempotent; runnable from any cwd.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export B3IQ_REPO="${B3IQ_REPO:-$(cd "$HERE/../.." && pwd)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/b3iq/target}"
VENV="${B3IQ_BINDINGS_VENV:-$HOME/.cache/b3iq/venv-bindings}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.7,<2" "pytest>=7" "openai>=1"

cd "$HERE"
# Dev profile on purpose: it shares the build cache with `cargo test` (see the root Cargo.toml).
VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" develop --quiet
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests
