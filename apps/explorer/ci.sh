#!/usr/bin/env bash
# CI for the explorer: install, typecheck, unit tests, reproducible build check.
# The end-to-end test (real hardhat + control plane + gateway + nodes, then Chromium) is the Rust
# test apps/b3iqd/tests/explorer.rs, run by the cargo-test step; it runs e2e/explorer.e2e.mjs.
# Runnable from any cwd; idempotent; exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

echo "== explorer: npm ci"
npm ci --no-audit --no-fund --loglevel=error

echo "== explorer: typecheck + unit tests (vitest)"
npx --no-install tsc --noEmit -p .
npx --no-install vitest run

echo "== explorer: rebuild dist/ and compare with the committed build"
npx --no-install vite build --logLevel warn
if ! git -C "$here" diff --exit-code --stat -- dist; then
  echo "FAIL: apps/explorer/dist/ differs from the committed build." >&2
  echo "      Run 'npm run build' in apps/explorer and commit dist/." >&2
  exit 1
fi
untracked="$(git -C "$here" ls-files --others --exclude-standard -- dist)"
if [ -n "$untracked" ]; then
  echo "FAIL: the fresh build produced files that are not committed:" >&2
  echo "$untracked" >&2
  echo "      Run 'npm run build' in apps/explorer and commit dist/." >&2
  exit 1
fi
echo "dist/ matches the committed build"
