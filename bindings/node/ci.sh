#!/usr/bin/env bash
# CI for the Node binding, in two stages so a failure in one does not hide the other:
#  1. verify-only addon (`--no-default-features`: no b3iq-host / llama.cpp): golden vectors,
#     jobs/errors, declared-vs-real exports, a tsc check of the typings;
#  2. full addon (default feature `host`): every test, including the Runtime with the real
#     default model and the `openai` example against an embedded LocalNode.
# `npm ci` installs the dev dependencies; scripts/build.js builds with cargo in the dev profile
# with the CARGO_TARGET_DIR given (reusing `cargo test`'s build). Idempotent; any cwd.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export B3IQ_REPO="${B3IQ_REPO:-$(cd "$HERE/../.." && pwd)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/b3iq/target}"

cd "$HERE"
npm ci --no-audit --no-fund --ignore-scripts

echo "== bindings/node: verify-only build"
node scripts/build.js --no-default-features
node --test test/vectors.test.js test/jobs.test.js test/exports.test.js test/types.test.js

echo "== bindings/node: full build (LocalNode, Runtime)"
node scripts/build.js
node --test test/
