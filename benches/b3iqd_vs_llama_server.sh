#!/usr/bin/env bash
# b3iqd (the full host: auth, receipts, metrics) vs llama.cpp's own llama-server (the strongest
# single-node peer) on the same model, thread count, parallel slots, prompts and machine, in one
# run, interleaved (A B A B), with benches/peers/loadgen.py (the official `openai` client,
# streaming). Issue 17's comparison:
#   - aggregate generation tokens/s at concurrency 1, 4 and 8 (target: b3iqd >= 1.0x);
#   - time to first token at concurrency 1, cold prompt and third turn of a chat (target: <=);
#   - RSS with the default model loaded, before any request (target: <=).
#
#   benches/peers/setup-llama-server.sh      # once: builds llama-server (~10 min, cached)
#   benches/b3iqd_vs_llama_server.sh         # CONC="1 4 8" ROUNDS=3 by default
#
# Env: B3IQ_TEST_MODEL (else scripts/fetch-model), THREADS (2), MAX_TOKENS (64), ROUNDS (3),
#      REQUESTS_PER_SLOT (2), CONC ("1 4 8"), PROFILE (debug: reuses the test build, whose
#      llama.cpp is CMake Release like llama-server's; release for a release b3iqd),
#      B3IQ_PEERS_DIR (~/.cache/b3iq/peers), CARGO_TARGET_DIR.
# Prints JSON lines and a summary with the ratios; writes benches/results/b3iqd_vs_llama_server.jsonl.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
MODEL="${B3IQ_TEST_MODEL:-$(python3 "$REPO/scripts/fetch-model")}"
THREADS="${THREADS:-2}"
MAX_TOKENS="${MAX_TOKENS:-64}"
ROUNDS="${ROUNDS:-3}"
PER="${REQUESTS_PER_SLOT:-2}"
CONC="${CONC:-1 4 8}"
MAXC="$(printf '%s\n' $CONC | sort -n | tail -1)"
SLOTS="$(( MAXC > 4 ? MAXC : 4 ))"
CTX=2048
PEERS_DIR="${B3IQ_PEERS_DIR:-$HOME/.cache/b3iq/peers}"
LS="$PEERS_DIR/llama-server"
[ -x "$LS" ] || { echo "run benches/peers/setup-llama-server.sh first" >&2; exit 1; }
PY="${B3IQ_PYTHON:-$HOME/.cache/b3iq/venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" -c "import openai" 2>/dev/null || { echo "$PY needs the openai package (pip install -r .ci/pip-requirements.txt)" >&2; exit 1; }
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
PROFILE="${PROFILE:-debug}"
if [ "$PROFILE" = release ]; then (cd "$REPO" && cargo build --quiet --release -p b3iqd); else (cd "$REPO" && cargo test --locked --quiet --no-run 2>/dev/null); fi
BIN="$TARGET/$PROFILE/b3iqd"
WORK="$(mktemp -d)"
OUT="$HERE/results/b3iqd_vs_llama_server.jsonl"; mkdir -p "$HERE/results"; : > "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
. "$HERE/peers/b3iqd.sh"

# b3iqd: SLOTS parallel sequences of CTX tokens each, THREADS threads.
H="$WORK/node"; mkdir -p "$H"
printf '{"threads": %s, "parallel": %s, "context_tokens": %s, "max_queue": 64}\n' "$THREADS" "$SLOTS" "$CTX" >"$H/config.json"
start_b3iqd "$H" --model "$MODEL"
claim_b3iqd "$H"

# llama-server: the same slots, context per slot, threads; its defaults otherwise (continuous
# batching, prompt cache).
LS_PORT=18632
"$LS" -m "$MODEL" --host 127.0.0.1 --port "$LS_PORT" -t "$THREADS" -tb "$THREADS" -np "$SLOTS" \
  -c "$(( SLOTS * CTX ))" --alias model >"$WORK/ls.log" 2>&1 &
LS_PID=$!; PIDS+=($LS_PID)
for _ in $(seq 1 180); do curl -sf "http://127.0.0.1:$LS_PORT/v1/models" >/dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$LS_PORT/v1/models" >/dev/null || { cat "$WORK/ls.log" >&2; exit 1; }
sleep 2
echo "{\"measure\":\"rss_model_loaded_kb\",\"b3iqd\":$(rss_kb "$B3_PID"),\"llama_server\":$(rss_kb "$LS_PID")}" | tee -a "$OUT"

run() { "$PY" "$REPO/benches/peers/loadgen.py" --base-url "$1" --api-key-file "$WORK/key" --model "$2" \
  --concurrency "$3" --requests "$(( $3 * PER ))" --max-tokens "$MAX_TOKENS"; }
# Time to first token: a cold prompt (a fresh nonce first, so no cache can hold it) and the
# third turn of a chat whose first two turns were just served (the prompt cache's case).
ttft() { "$PY" - "$1" "$2" "$WORK/key" "$MAX_TOKENS" <<'PYEOF'
import json, sys, time, uuid
from openai import OpenAI
base, model, keyf, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = OpenAI(base_url=base, api_key=open(keyf).read().strip(), max_retries=0)
def first_token(messages):
    t0 = time.perf_counter(); text = ""; first = None
    for ch in c.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0, stream=True):
        if ch.choices and ch.choices[0].delta.content:
            first = first or time.perf_counter() - t0
            text += ch.choices[0].delta.content
    return first, text
nonce = uuid.uuid4().hex
msgs = [{"role": "system", "content": f"Session {nonce}. You are a patient teacher who answers in full sentences."},
        {"role": "user", "content": "Name three animals that live in the sea and say one thing about each."}]
cold, a1 = first_token(msgs)
msgs += [{"role": "assistant", "content": a1}, {"role": "user", "content": "Which of them is the largest, and how large does it grow?"}]
_, a2 = first_token(msgs)
msgs += [{"role": "assistant", "content": a2}, {"role": "user", "content": "Write one more sentence about it."}]
third, _ = first_token(msgs)
print(json.dumps({"ttft_cold_s": cold, "ttft_third_turn_s": third}))
PYEOF
}
run "$B3_BASE/v1" "$MODEL_ID" 1 >/dev/null; run "http://127.0.0.1:$LS_PORT/v1" model 1 >/dev/null
for r in $(seq 1 "$ROUNDS"); do
  echo "{\"server\":\"b3iqd\",\"ttft\":true,\"round\":$r,\"result\":$(ttft "$B3_BASE/v1" "$MODEL_ID")}" | tee -a "$OUT"
  echo "{\"server\":\"llama-server\",\"ttft\":true,\"round\":$r,\"result\":$(ttft "http://127.0.0.1:$LS_PORT/v1" model)}" | tee -a "$OUT"
done
for c in $CONC; do
  for r in $(seq 1 "$ROUNDS"); do
    echo "{\"server\":\"b3iqd\",\"concurrency\":$c,\"round\":$r,\"result\":$(run "$B3_BASE/v1" "$MODEL_ID" "$c")}" | tee -a "$OUT"
    echo "{\"server\":\"llama-server\",\"concurrency\":$c,\"round\":$r,\"result\":$(run "http://127.0.0.1:$LS_PORT/v1" model "$c")}" | tee -a "$OUT"
  done
done

"$PY" - "$OUT" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda xs: statistics.median(xs) if xs else None
for c in sorted({r["concurrency"] for r in rows if "concurrency" in r}):
    b = med([r["result"]["aggregate_tokens_per_second"] for r in rows if r.get("server") == "b3iqd" and r.get("concurrency") == c])
    l = med([r["result"]["aggregate_tokens_per_second"] for r in rows if r.get("server") == "llama-server" and r.get("concurrency") == c])
    print(json.dumps({"summary": f"tokens/s at concurrency {c}", "b3iqd": b, "llama_server": l, "ratio": round(b / l, 3) if b and l else None, "target": ">= 1.0"}))
for k in ("ttft_cold_s", "ttft_third_turn_s"):
    b = med([r["result"][k] for r in rows if r.get("ttft") and r["server"] == "b3iqd"])
    l = med([r["result"][k] for r in rows if r.get("ttft") and r["server"] == "llama-server"])
    print(json.dumps({"summary": k, "b3iqd": b, "llama_server": l, "ratio": round(b / l, 3) if b and l else None, "target": "<= 1.0"}))
rss = next(r for r in rows if r.get("measure") == "rss_model_loaded_kb")
print(json.dumps({"summary": "RSS with the model loaded (KiB)", "b3iqd": rss["b3iqd"], "llama_server": rss["llama_server"], "ratio": round(rss["b3iqd"] / rss["llama_server"], 3), "target": "<= 1.0"}))
PYEOF
