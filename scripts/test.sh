#!/usr/bin/env bash
# Set up .venv with the test tools and run the whole test suite (CPU only, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
# Two workers (TEST_WORKERS), each given whole test files (--dist loadfile): a module's shared server, store or
# export is set up once, on one worker. The ten slowest tests are printed at the end: where the time goes.
exec .venv/bin/python -m pytest tests -n "${TEST_WORKERS:-2}" --dist loadfile --durations=10 "$@"
