#!/usr/bin/env bash
# Client tests for b3iqd: the official `openai` Python package (pytest) and the official `openai`
# npm package (node:test) against the real daemon with the default model. Idempotent; runnable
# from any directory. Env: CARGO_TARGET_DIR, B3IQ_TEST_MODEL, B3IQ_REPO (all optional).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="${B3IQ_REPO:-$(cd "$here/../.." && pwd)}"
target="${CARGO_TARGET_DIR:-$repo/target}"

if [[ -z "${B3IQ_TEST_MODEL:-}" ]]; then
  B3IQ_TEST_MODEL="$(python3 "$repo/scripts/fetch-model")"
fi
export B3IQ_TEST_MODEL
[[ -f "$B3IQ_TEST_MODEL" ]] || { echo "ci.sh: default model not found at $B3IQ_TEST_MODEL" >&2; exit 1; }

# Same dev profile and target dir as `cargo test`, so this reuses that build.
# `cargo test --no-run` resolves features exactly as the cargo-test step did, so nothing is
# rebuilt; it also builds the b3iqd binary the daemon tests use.
(cd "$repo" && CARGO_TARGET_DIR="$target" cargo test --locked --no-run --quiet)
export B3IQD_BIN="$target/debug/b3iqd"
[[ -x "$B3IQD_BIN" ]] || { echo "ci.sh: $B3IQD_BIN was not built" >&2; exit 1; }

# Python: pytest + openai come from .ci/pip-requirements.txt (the xtask venv); install if missing.
py="python3"
if ! "$py" -c "import openai, pytest" 2>/dev/null; then
  venv="${HOME}/.cache/b3iq/venv"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet -r "$repo/.ci/pip-requirements.txt"
  py="$venv/bin/python"
fi
echo "== openai (Python) client tests"
"$py" -m pytest -q "$here/tests/clients" -p no:cacheprovider

echo "== openai (npm) client tests"
cd "$here/tests/clients"
npm ci --no-audit --no-fund --loglevel=error
node --test test_openai_node.mjs
