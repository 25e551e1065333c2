#!/usr/bin/env bash
# Build llama-cpp-python's OpenAI-compatible server (the peer the runtime is compared with)
# into /root/.cache/b3iq/peers/venv (override with B3IQ_PEERS_DIR). Idempotent: does nothing
# when the pinned version is already installed. Builds from source at low priority (~15+ min on
# 2 cores) for the same portable AVX2 baseline the b3iq llama.cpp build uses (a native build
# crashed in decode on this machine class).
set -euo pipefail
PEERS_DIR="${B3IQ_PEERS_DIR:-$HOME/.cache/b3iq/peers}"
VENV="$PEERS_DIR/venv"
VERSION="0.3.36"
mkdir -p "$PEERS_DIR"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('llama_cpp_python') == '$VERSION' else 1)" 2>/dev/null; then
  echo "llama-cpp-python $VERSION already installed in $VENV"
  exit 0
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet openai httpx
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  nice -n 19 "$VENV/bin/python" -m pip install --no-cache-dir "llama-cpp-python[server]==$VERSION"
echo "installed llama-cpp-python $VERSION into $VENV"
