#!/usr/bin/env bash
# Side-by-side serving comparison on one model, same thread count, same machine, one run:
# the b3iq Runtime (served by the runtime's serve_openai example) vs llama-cpp-python's
# OpenAI server, with loadgen.py at several concurrency levels, interleaved (A B A B).
#
#   benches/peers/compare.sh [concurrency list, default "1 2 4 8"]
#
# Env: B3IQ_TEST_MODEL (else scripts/fetch-model), THREADS (2), MAX_TOKENS (64), ROUNDS (2),
#      B3IQ_PEERS_DIR (~/.cache/b3iq/peers; run setup-llama-cpp-python.sh first),
#      CARGO_TARGET_DIR. Prints one JSON line per (server, concurrency, round).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
MODEL="${B3IQ_TEST_MODEL:-$(python3 "$REPO/scripts/fetch-model")}"
THREADS="${THREADS:-2}"
MAX_TOKENS="${MAX_TOKENS:-64}"
ROUNDS="${ROUNDS:-2}"
CONC="${1:-1 2 4 8}"
PEERS_DIR="${B3IQ_PEERS_DIR:-$HOME/.cache/b3iq/peers}"
PY="$PEERS_DIR/venv/bin/python"
[ -x "$PY" ] || { echo "run benches/peers/setup-llama-cpp-python.sh first" >&2; exit 1; }
"$PY" -c "import openai" 2>/dev/null || "$PY" -m pip install --quiet openai

B3_PORT=18431; LCP_PORT=18432
cargo build --quiet -p b3iq-runtime --example serve_openai
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
"$TARGET/debug/examples/serve_openai" "$MODEL" "$B3_PORT" "$THREADS" 8 2>/tmp/b3iq-serve.log &
B3_PID=$!
# --interrupt_requests False: by default llama-cpp-python's server cuts off the running stream
# when a new request arrives, so concurrent clients would get truncated answers; queue instead.
"$PY" -m llama_cpp.server --model "$MODEL" --host 127.0.0.1 --port "$LCP_PORT" --n_threads "$THREADS" \
  --n_threads_batch "$THREADS" --n_ctx 8192 --model_alias model --interrupt_requests False >/tmp/lcp-serve.log 2>&1 &
LCP_PID=$!
cleanup() { kill "$B3_PID" "$LCP_PID" 2>/dev/null || true; }
trap cleanup EXIT
wait_up() { for _ in $(seq 1 120); do curl -sf "$1/models" >/dev/null && return 0; sleep 1; done; echo "server $1 did not start" >&2; exit 1; }
wait_up "http://127.0.0.1:$B3_PORT/v1"
wait_up "http://127.0.0.1:$LCP_PORT/v1"
run() { "$PY" "$HERE/loadgen.py" --base-url "$1" --model model --concurrency "$2" --requests "$2" --max-tokens "$MAX_TOKENS" ${3:-}; }
# Warm-up.
run "http://127.0.0.1:$B3_PORT/v1" 1 >/dev/null; run "http://127.0.0.1:$LCP_PORT/v1" 1 >/dev/null
for c in $CONC; do
  for r in $(seq 1 "$ROUNDS"); do
    echo "{\"server\":\"b3iq-runtime\",\"round\":$r,\"result\":$(run "http://127.0.0.1:$B3_PORT/v1" "$c")}"
    echo "{\"server\":\"llama-cpp-python\",\"round\":$r,\"result\":$(run "http://127.0.0.1:$LCP_PORT/v1" "$c")}"
  done
done
