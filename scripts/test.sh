#!/usr/bin/env bash
# Set up .venv with the test tools and run the whole test suite (CPU only, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
exec .venv/bin/python -m pytest tests "$@"
