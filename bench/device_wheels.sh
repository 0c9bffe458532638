#!/usr/bin/env bash
# Wheels that `bench/gpu.sh --real-size` needs on a GPU machine that has PyTorch (Python 3.12, CUDA 13) but
# no network and none of: bitsandbytes, qwen-vl-utils, av, pydantic(-settings) and their own needs (its
# transformers is older than ours, so ours travels too). Run here, where pip reaches PyPI; the wheels land in
# .whl/ (ignored by git through .git/info/exclude), to be carried to that machine and installed there with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site
# The bitsandbytes wheel holds one native library per CUDA version (43 MB); only CUDA 13's and the CPU's are
# kept, so everything that travels stays under the 64 MiB a device call may carry.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
# Versions pinned in requirements.txt, and the versions of their needs in the project's .venv.
PACKAGES=(
  transformers==5.24.0 bitsandbytes==0.50.2 qwen-vl-utils==0.0.14 av==18.1.0
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0
  typing-inspection==0.4.5 typing-extensions==4.16.0 python-dotenv==1.2.4
)
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")" "$DEST"
grep -qxF "/$DEST/" "$exclude" 2>/dev/null || echo "/$DEST/" >>"$exclude"

python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST" "${PACKAGES[@]}"

# Keep CUDA 13's and the CPU's libraries of bitsandbytes (the machine's torch is built for CUDA 13.0).
python3 - "$DEST" <<'EOF'
import re, sys, zipfile
from pathlib import Path

for wheel in Path(sys.argv[1]).glob("bitsandbytes-*.whl"):
    with zipfile.ZipFile(wheel) as source:
        names = source.namelist()
        drop = {n for n in names if re.search(r"libbitsandbytes_(cuda(?!13)\d+|rocm\d+|xpu\d+)\.so$", n)}
        if not drop:
            continue
        slim = wheel.with_suffix(".slim")
        with zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
            for name in names:
                if name in drop:
                    continue
                data = source.read(name)
                if name.endswith(".dist-info/RECORD"):
                    data = b"".join(line for line in data.splitlines(keepends=True)
                                    if line.split(b",")[0].decode() not in drop)
                target.writestr(source.getinfo(name), data)
    slim.replace(wheel)
    print(f"{wheel.name}: dropped {len(drop)} libraries of other CUDA / ROCm / XPU versions")
EOF

total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
ls -l "$DEST"
echo "wheels: $((total / 1048576)) MiB; tracked files: $((tree / 1048576)) MiB; a device call carries at most 64 MiB"
[ $((total + tree)) -lt $((64 * 1048576)) ] || { echo "too large to carry" >&2; exit 1; }
