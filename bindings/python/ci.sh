#!/usr/bin/env bash
# CI for the Python binding, in two stages so a failure in one does not hide the other:
#  1. verify-only build (`--no-default-features`: no b3iq-host / llama.cpp): the golden-vector,
#     job and error tests (they do not need a host);
#  2. full build (default feature `host`): every test, including LocalNode + Runtime with the
#     real default model and the README quick start with the `openai` package.
# Both build in the dev profile with the CARGO_TARGET_DIR given (so `cargo test`'s build is
# reused) into their own virtualenv with `maturin develop`. Idempotent; runnable from any cwd.
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
develop() { VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" develop --quiet "$@"; }

echo "== bindings/python: verify-only build"
develop --no-default-features
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_vectors.py tests/test_jobs_and_errors.py

echo "== bindings/python: full build (LocalNode, Runtime)"
develop
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests
