#!/usr/bin/env bash
# Create the OpenVINO VLM exporter's own environment, apart from the service's (.venv):
# optimum-intel 2.2.0 needs transformers < 5.6 while the service pins 5.24.
# Usage: scripts/setup-vlm-export.sh [FOLDER]   (default .venv-vlm-export at the project root; VQA_EXPORT_ENV)
# runners/vlm/export.py runs it by itself when the environment is missing. About 3 minutes, ~6 GB on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=${1:-${VQA_EXPORT_ENV:-.venv-vlm-export}}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp="$env_dir/.installed-$(sha1sum requirements-vlm-export.txt | cut -c1-12)"
[ -f "$stamp" ] && exit 0
[ -x "$env_dir/bin/python" ] || "$PYTHON" -m venv "$env_dir"
"$env_dir/bin/python" -m pip install --quiet --upgrade pip
"$env_dir/bin/python" -m pip install --quiet -r requirements-vlm-export.txt
touch "$stamp"
