# Shared by the b3iqd-vs-peer scripts (benches/b3iqd_vs_*.sh), sourced after they set BIN (the
# b3iqd binary), PY (a Python with the `openai` package), WORK (a scratch dir) and PIDS (an
# array their cleanup kills).

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# start_b3iqd HOME [serve args...]: starts `b3iqd serve` on a free loopback port with HOME
# (stdout and stderr in HOME.out / HOME.err, pid in HOME.pid) and waits until it listens.
start_b3iqd() {
  local home="$1"; shift
  B3IQ_HOME="$home" B3IQ_LOG=warn "$BIN" serve --listen 127.0.0.1:0 "$@" >"$home.out" 2>"$home.err" &
  PIDS+=($!); echo $! >"$home.pid"
  for _ in $(seq 1 300); do grep -q "listening on" "$home.out" 2>/dev/null && break; sleep 0.2; done
  grep -q "listening on" "$home.out" || { cat "$home.err" >&2; exit 1; }
}

# claim_b3iqd HOME: claims the node started with HOME and makes an inference key. Sets B3_BASE,
# B3_PID and MODEL_ID; the key is in $WORK/key (0600). The setup token is read from the setup
# URL, or from HOME/setup-token when stdout was not a terminal (then `serve` prints no URL).
claim_b3iqd() {
  local home="$1" token cookie
  B3_BASE="$(grep -o 'http://127.0.0.1:[0-9]*' "$home.out" | head -1)"
  B3_PID="$(cat "$home.pid")"
  token="$(grep -o '#token=[A-Za-z0-9_]*' "$home.out" | head -1 | cut -d= -f2)"
  if [ -z "$token" ] && [ -f "$home/setup-token" ]; then token="$(cat "$home/setup-token")"; fi
  cookie="$(curl -sf -D - -o /dev/null -H 'content-type: application/json' \
    -d "{\"setup_token\":\"$token\",\"username\":\"bench\",\"password\":\"bench-password-123\"}" \
    "$B3_BASE/api/setup/claim" | awk -F'[ ;]' 'tolower($1)=="set-cookie:" {print $2}')"
  curl -sf -H 'content-type: application/json' -H "cookie: $cookie" -d '{"name":"bench"}' "$B3_BASE/api/keys" \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["secret"])' >"$WORK/key"
  chmod 600 "$WORK/key"
  MODEL_ID="$(curl -sf -H "authorization: Bearer $(cat "$WORK/key")" "$B3_BASE/v1/models" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
}
