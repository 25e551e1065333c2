#!/usr/bin/env bash
# Runs cargo-fuzz targets for a fixed time each.
#
#   fuzz/run.sh SECONDS [TARGET...]     (no TARGET: every target in fuzz/Cargo.toml)
#
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Each target starts from the committed seeds in fuzz/corpus/<target>/ (read-only here: new
# inputs go to a temporary directory, so the committed corpus stays small). Crashes are saved
# by libFuzzer under fuzz/artifacts/<target>/; copy a reproducer into fuzz/corpus/<target>/
# once fixed so `cargo test -p b3iq-core --test fuzz_corpus` replays it forever.
# The gguf_header target (owned by the runtime) is built with `--features gguf`, the host
# targets with `--features host` (their corpus is replayed by `cargo test -p b3iq-host --test fuzz_corpus`).
set -euo pipefail

usage="usage: fuzz/run.sh SECONDS [TARGET...]"
secs="${1:?$usage}"
shift
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz ..." >&2
    cargo install cargo-fuzz --locked
fi

if [ $# -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^b3iq-fuzz$')
else
    targets=("$@")
fi

logdir="$(mktemp -d)"
failed=()
summary=()
for t in "${targets[@]}"; do
    feat=()
    [ "$t" = gguf_header ] && feat=(--features gguf)
    case "$t" in host_header|same_origin|request_body|support_bundle|update_metadata) feat=(--features host) ;; esac
    work="$(mktemp -d)"
    mkdir -p "corpus/$t"
    echo "=== fuzzing $t for ${secs}s ==="
    set +e
    cargo fuzz run "${feat[@]}" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        >"$logdir/$t.log" 2>&1
    rc=$?
    set -e
    runs="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$logdir/$t.log" | tail -1 || true)"
    cov="$(grep -o 'cov: [0-9]*' "$logdir/$t.log" | tail -1 || true)"
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        summary+=("$t: FAILED (exit $rc) ${runs:-} ${cov:-}; log $logdir/$t.log")
        tail -n 30 "$logdir/$t.log"
    else
        summary+=("$t: ok, ${runs:-no run count} (${cov:-no coverage line})")
    fi
    rm -rf "$work"
done

echo
echo "=== fuzz summary (${secs}s per target) ==="
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED targets: ${failed[*]}" >&2
    exit 1
fi
