#!/usr/bin/env bash
# Build llama.cpp's own tools once and cache them: `llama-server` (OpenAI API, `--jinja` chat templates with
# tools) and `llama-quantize`, plus the converter `convert_hf_to_gguf.py` and its `gguf-py`, all from the
# llama.cpp that the `llama-cpp-python` source distribution on PyPI vendors (no GitHub access needed).
# `make gguf` and `make test` run this; a second run finds the cache and does nothing.
#   cache: $TOOLTUNE_LLAMACPP, default ~/.cache/tooltune/llama.cpp-<version> (shared by every clone on the machine)
#   first build: about 8 minutes on 2 CPU cores (cmake + ninja, CPU backend; CUDA where an NVIDIA GPU and nvcc are found)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu.sh
VERSION=${TOOLTUNE_LLAMACPP_VERSION:-0.3.36}
DEST=${TOOLTUNE_LLAMACPP:-${XDG_CACHE_HOME:-$HOME/.cache}/tooltune/llama.cpp-$VERSION}
if [ "${1:-}" = --where ]; then
  echo "$DEST"
  exit 0
fi
if [ -f "$DEST/.complete" ]; then
  exit 0
fi
for tool in cmake ninja c++; do
  command -v $tool >/dev/null || { echo "install-llamacpp: '$tool' is missing: install cmake, ninja and a C++ compiler (Debian: apt install cmake ninja-build g++)" >&2; exit 2; }
done
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
mkdir -p "$(dirname "$DEST")"
WORK=$(mktemp -d "$(dirname "$DEST")/.build-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
echo "install-llamacpp: downloading llama-cpp-python==$VERSION (source) for its vendored llama.cpp"
$PY -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
FLAGS=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
       -DBUILD_SHARED_LIBS=OFF)
if has_nvidia_gpu && command -v nvcc >/dev/null; then
  FLAGS+=(-DGGML_CUDA=ON)
  echo "install-llamacpp: NVIDIA GPU and nvcc found: building with CUDA"
fi
echo "install-llamacpp: building llama-server and llama-quantize (about 8 minutes on 2 cores)"
cmake -S "$SRC" -B "$WORK/build" "${FLAGS[@]}" >"$WORK/cmake.log" 2>&1 || { tail -30 "$WORK/cmake.log" >&2; exit 1; }
cmake --build "$WORK/build" --target llama-server llama-quantize -j "$(nproc)" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; exit 1; }
mkdir -p "$WORK/out/bin"
cp "$WORK/build/bin/llama-server" "$WORK/build/bin/llama-quantize" "$WORK/out/bin/"
cp -r "$SRC/convert_hf_to_gguf.py" "$SRC/conversion" "$SRC/gguf-py" "$SRC/LICENSE" "$WORK/out/"
"$WORK/out/bin/llama-server" --version >"$WORK/out/version.txt" 2>&1 || true
echo "$VERSION" >"$WORK/out/.complete"
rm -rf "$DEST"
mv "$WORK/out" "$DEST"
echo "install-llamacpp: llama.cpp tools in $DEST ($(( $(date +%s) - start )) s): $(grep -m1 version "$DEST/version.txt" || true)"
