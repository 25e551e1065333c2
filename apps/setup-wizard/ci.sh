#!/usr/bin/env bash
# CI for the setup wizard: install, unit tests, reproducible build check, end-to-end test.
# Runnable from any cwd; idempotent; exits non-zero on any failure.
#   Env: CARGO_TARGET_DIR (default ~/.cache/b3iq/target), B3IQ_TEST_MODEL (default GGUF; else
#   scripts/fetch-model), B3IQ_REPO (repo root; default: derived from this file).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export B3IQ_REPO="${B3IQ_REPO:-$(cd "$here/../.." && pwd)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/b3iq/target}"
cd "$here"

echo "== setup-wizard: npm ci"
npm ci --no-audit --no-fund --loglevel=error

echo "== setup-wizard: typecheck + unit tests (vitest)"
npx --no-install tsc --noEmit -p .
npx --no-install vitest run

echo "== setup-wizard: rebuild dist/ and compare with the committed build"
npx --no-install vite build --logLevel warn
if ! git -C "$here" diff --exit-code --stat -- dist; then
  echo "FAIL: apps/setup-wizard/dist/ differs from the committed build." >&2
  echo "      Run 'npm run build' in apps/setup-wizard and commit dist/." >&2
  exit 1
fi
untracked="$(git -C "$here" ls-files --others --exclude-standard -- dist)"
if [ -n "$untracked" ]; then
  echo "FAIL: the fresh build produced files that are not committed:" >&2
  echo "$untracked" >&2
  echo "      Run 'npm run build' in apps/setup-wizard and commit dist/." >&2
  exit 1
fi
echo "dist/ matches the committed build"

echo "== setup-wizard: build b3iqd (embeds dist/)"
# `cargo test --no-run` resolves features exactly as the cargo-test step did, so nothing is
# rebuilt; it also builds the b3iqd binary the daemon tests use.
(cd "$B3IQ_REPO" && cargo test --locked --no-run --quiet)
export B3IQD_BIN="$CARGO_TARGET_DIR/debug/b3iqd"

if [ -z "${B3IQ_TEST_MODEL:-}" ]; then
  B3IQ_TEST_MODEL="$("$B3IQ_REPO/scripts/fetch-model" | tail -n 1)"
  export B3IQ_TEST_MODEL
fi
if [ ! -f "$B3IQ_TEST_MODEL" ]; then
  echo "FAIL: default model not found at '$B3IQ_TEST_MODEL' (set B3IQ_TEST_MODEL or fix scripts/fetch-model)" >&2
  exit 1
fi

echo "== setup-wizard: end-to-end (real b3iqd + Chromium via playwright-core)"
node --test --test-reporter=spec e2e/
echo "screenshots: $B3IQ_REPO/test-artifacts/wizard/"
