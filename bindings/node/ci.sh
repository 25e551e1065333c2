#!/usr/bin/env bash
# CI for the Node binding: install the dev dependencies (npm ci), build the addon in the dev
# profile with @napi-rs/cli (reusing CARGO_TARGET_DIR), fail if the generated loader or type
# declarations (native.js, native.d.ts) are stale, then run the node:test suite.
# Idempotent; runnable from any cwd.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export B3IQ_REPO="${B3IQ_REPO:-$(cd "$HERE/../.." && pwd)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/b3iq/target}"

cd "$HERE"
npm ci --no-audit --no-fund --ignore-scripts
node scripts/build.js
if git -C "$HERE" rev-parse --git-dir >/dev/null 2>&1; then
  if ! git -C "$HERE" diff --quiet -- native.js native.d.ts; then
    git -C "$HERE" diff --stat -- native.js native.d.ts
    echo "bindings/node: native.js / native.d.ts are stale; run 'npm run build:debug' in bindings/node and commit" >&2
    exit 1
  fi
fi
node --test test/
