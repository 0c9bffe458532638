#!/usr/bin/env bash
# Set up .venv, bring the image index up to date, and serve on http://localhost:3000.
# Usage: scripts/serve.sh [--sample-library] [--no-index] [bentoml serve arguments...]
# The service never embeds images itself: the index step is the separate `python -m indexer` job,
# incremental (unchanged files are skipped). Skip it with --no-index. Extra arguments go to `bentoml serve`.
# Indexing first (the HNSW index is built at the end of a run while nothing serves) is the fast path,
# not a requirement: `python -m indexer` can also run while this serves, even on the embedded store
# (it then writes through the service; see docs/indexing.md).
# Sample photos (scripts/sample_library.py) are written into IMAGE_LIBRARY only when it is missing or empty:
# unasked when CLIP_MODEL is the tiny test model (trained on these very shapes), or with --sample-library.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
index=1
sample=--if-tiny
while [ $# -gt 0 ]; do
  case "$1" in
    --no-index) index=0; shift ;;
    --sample-library) sample=""; shift ;;
    *) break ;;
  esac
done
library=$(.venv/bin/python -c 'from config import load_settings_or_exit; print(load_settings_or_exit().image_library)')
if [ -z "$sample" ] || [ ! -d "$library" ] || [ -z "$(ls -A "$library")" ]; then
  .venv/bin/python scripts/sample_library.py $sample
fi
if [ "$index" = 1 ] && [ -d "$library" ]; then
  .venv/bin/python -m indexer
elif [ "$index" = 1 ]; then
  echo "note: no image library at $library (set IMAGE_LIBRARY, or --sample-library for sample photos);" \
       "serving an empty index" >&2
fi
exec .venv/bin/bentoml serve "$@"
