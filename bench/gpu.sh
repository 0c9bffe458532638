#!/usr/bin/env bash
# GPU figures for issue 5 (thin wrapper around bench/gpu_bench.py; see its --help). Installs and
# downloads nothing. Uses $VQA_MODEL / $CLIP_MODEL when they are local model folders, else the tiny
# test fixtures. Examples:
#   VQA_MODEL=/models/Qwen2.5-VL-3B-Instruct bench/gpu.sh --record
#   bench/gpu.sh --cpu          # smoke run on a machine without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" bench/gpu_bench.py "$@"
