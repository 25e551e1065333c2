#!/usr/bin/env bash
# CI for the Node binding: install the dev dependencies (npm ci), build the addon in the dev
# profile with cargo (reusing CARGO_TARGET_DIR; scripts/build.js), then run the node:test suite
# (golden vectors, jobs/errors, declared-vs-real exports, a tsc check of the typings, the
# runtime with the real default model, and the openai example against an embedded host).
# Idempotent; runnable from any cwd.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export B3IQ_REPO="${B3IQ_REPO:-$(cd "$HERE/../.." && pwd)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/b3iq/target}"

cd "$HERE"
npm ci --no-audit --no-fund --ignore-scripts
node scripts/build.js
node --test test/
