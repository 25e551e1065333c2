#!/usr/bin/env bash
# b3iqd (release, full host: auth, receipts, metrics) vs llama-cpp-python's OpenAI server on the
# same model, thread count, prompt and machine, in one run, interleaved (A B A B), with the
# runtime engineer's benches/peers/loadgen.py (official `openai` client, streaming).
# Also measures the idle RSS of b3iqd without any model loaded.
#
#   benches/b3iqd_vs_llama_cpp_python.sh            # concurrency 1 and 4
#   CONC="1 2 4 8" benches/b3iqd_vs_llama_cpp_python.sh   # the whole curve
#
# Env: B3IQ_TEST_MODEL (else scripts/fetch-model), THREADS (2), MAX_TOKENS (64), ROUNDS (3),
#      REQUESTS_PER_SLOT (2), B3IQ_PEERS_DIR (~/.cache/b3iq/peers, see
#      benches/peers/setup-llama-cpp-python.sh), CARGO_TARGET_DIR.
# Prints JSON lines and a summary with the ratios; writes benches/results/b3iqd_vs_lcp.jsonl.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
MODEL="${B3IQ_TEST_MODEL:-$(python3 "$REPO/scripts/fetch-model")}"
THREADS="${THREADS:-2}"
MAX_TOKENS="${MAX_TOKENS:-64}"
ROUNDS="${ROUNDS:-3}"
PER="${REQUESTS_PER_SLOT:-2}"
CONC="${CONC:-1 4}"   # concurrency levels, e.g. CONC="1 2 4 8" for the whole curve
MAXC="$(printf '%s\n' $CONC | sort -n | tail -1)"
PEERS_DIR="${B3IQ_PEERS_DIR:-$HOME/.cache/b3iq/peers}"
PY="$PEERS_DIR/venv/bin/python"
[ -x "$PY" ] || { echo "run benches/peers/setup-llama-cpp-python.sh first" >&2; exit 1; }
HAVE_LCP=1
"$PY" -c "import llama_cpp.server" 2>/dev/null || { echo "llama-cpp-python[server] is not installed in $PY; measuring b3iqd only" >&2; HAVE_LCP=0; }
"$PY" -c "import openai" 2>/dev/null || "$PY" -m pip install --quiet openai
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
PROFILE="${PROFILE:-release}"   # release for reported numbers; PROFILE=debug reuses the test build
# PROFILE=debug builds through `cargo test --no-run` (the workspace's default members), so the
# feature set, and with it the llama.cpp build, is the one `cargo xtask test` already made.
if [ "$PROFILE" = release ]; then (cd "$REPO" && cargo build --quiet --release -p b3iqd); else (cd "$REPO" && cargo test --locked --quiet --no-run 2>/dev/null); fi
BIN="$TARGET/$PROFILE/b3iqd"
WORK="$(mktemp -d)"
OUT="$HERE/results/b3iqd_vs_lcp.jsonl"; mkdir -p "$HERE/results"; : > "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

. "$HERE/peers/b3iqd.sh"

# 1. Idle RSS without a model.
mkdir -p "$WORK/idle"
start_b3iqd "$WORK/idle" --no-model
sleep 2
IDLE_PID="$(cat "$WORK/idle.pid")"
IDLE_KB="$(rss_kb "$IDLE_PID")"
kill "$IDLE_PID"
echo "{\"measure\":\"idle_rss_no_model_kb\",\"value\":$IDLE_KB,\"target_max_kb\":61440}" | tee -a "$OUT"

# 2. b3iqd with the model (threads and parallel slots from config.json).
H="$WORK/node"; mkdir -p "$H"
printf '{"threads": %s, "parallel": %s, "max_queue": 64}\n' "$THREADS" "$(( MAXC > 4 ? MAXC : 4 ))" >"$H/config.json"
start_b3iqd "$H" --model "$MODEL"
claim_b3iqd "$H"

# 3. llama-cpp-python's server, same model and threads.
LCP_PORT=18532
# --interrupt_requests False: by default llama-cpp-python's server cuts off the running stream
# when a new request arrives, so concurrent clients would get truncated answers; queue instead.
if [ "$HAVE_LCP" = 1 ]; then
  if curl -sf "http://127.0.0.1:$LCP_PORT/v1/models" >/dev/null 2>&1; then
    echo "port $LCP_PORT already answers (a leftover server?); stop it first" >&2; exit 1
  fi
  # Started directly (not in a `&&` list, which would background a subshell whose PID is not
  # the server's), so the cleanup trap stops the server itself.
  "$PY" -m llama_cpp.server --model "$MODEL" --host 127.0.0.1 --port "$LCP_PORT" --n_threads "$THREADS" \
    --n_threads_batch "$THREADS" --n_ctx 8192 --model_alias model --interrupt_requests False >"$WORK/lcp.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 180); do curl -sf "http://127.0.0.1:$LCP_PORT/v1/models" >/dev/null && break; sleep 1; done
  curl -sf "http://127.0.0.1:$LCP_PORT/v1/models" >/dev/null || { cat "$WORK/lcp.log" >&2; exit 1; }
fi

run() { "$PY" "$REPO/benches/peers/loadgen.py" --base-url "$1" --api-key-file "$WORK/key" --model "$2" \
  --concurrency "$3" --requests "$(( $3 * PER ))" --max-tokens "$MAX_TOKENS"; }
run "$B3_BASE/v1" "$MODEL_ID" 1 >/dev/null; [ "$HAVE_LCP" = 1 ] && run "http://127.0.0.1:$LCP_PORT/v1" model 1 >/dev/null
for c in $CONC; do
  for r in $(seq 1 "$ROUNDS"); do
    echo "{\"server\":\"b3iqd\",\"concurrency\":$c,\"round\":$r,\"result\":$(run "$B3_BASE/v1" "$MODEL_ID" "$c")}" | tee -a "$OUT"
    [ "$HAVE_LCP" = 1 ] && echo "{\"server\":\"llama-cpp-python\",\"concurrency\":$c,\"round\":$r,\"result\":$(run "http://127.0.0.1:$LCP_PORT/v1" model "$c")}" | tee -a "$OUT"
  done
done
echo "{\"measure\":\"b3iqd_rss_after_load_kb\",\"value\":$(rss_kb "$B3_PID"),\"model_file_bytes\":$(stat -c %s "$MODEL")}" | tee -a "$OUT"

"$PY" - "$OUT" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for c in sorted({r["concurrency"] for r in rows if "concurrency" in r}):
    b = [r["result"]["aggregate_tokens_per_second"] for r in rows if r.get("server") == "b3iqd" and r["concurrency"] == c]
    l = [r["result"]["aggregate_tokens_per_second"] for r in rows if r.get("server") == "llama-cpp-python" and r["concurrency"] == c]
    if b and l:
        mb, ml = statistics.median(b), statistics.median(l)
        print(json.dumps({"summary": f"concurrency {c}", "b3iqd_tok_s_median": mb, "llama_cpp_python_tok_s_median": ml, "ratio": round(mb / ml, 3) if ml else None, "target": {1: 1.0, 4: 1.3}.get(c)}))
PYEOF
