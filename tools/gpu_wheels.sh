#!/usr/bin/env bash
# Wheels for a GPU machine without network access (Python 3.12, manylinux x86_64, PyTorch
# already installed there): the packages that video_gc, its tests and tools/check_gpu.py
# import and that such an image usually lacks. Writes them to .whl/ (git-ignored; or the
# folder given as $1), then lists them with their sizes.
#
#   bash tools/gpu_wheels.sh            # here, with network access to the package index
#   bash tools/check_gpu.sh OUT         # there: installs .whl/*.whl into a scratch folder, runs the check
#
# Versions: the pins of requirements.txt; their pure-Python dependencies that are not pinned
# there (yacs, termcolor, parameterized) at the versions below. Everything else they need
# (numpy, pyyaml, pillow, tabulate, portalocker, tqdm, networkx, typing_extensions) is assumed
# to be installed on the GPU machine; tools/check_gpu.py's env section says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${1:-.whl}

pin() {  # NAME==VERSION as requirements.txt pins it
    local line
    line=$(grep -E "^$1==" requirements.txt | head -n 1)
    [ -n "$line" ] || { echo "error: requirements.txt pins no version of $1" >&2; exit 1; }
    echo "$line"
}

rm -rf "$DEST"
mkdir -p "$DEST"
# Binary wheels for CPython 3.12 on manylinux x86_64 (decord 0.6.0 only exists as manylinux2010).
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 -d "$DEST" \
    "$(pin av)" "$(pin decord)" yacs==0.1.8 termcolor==3.3.0 parameterized==0.9.0
# Pure-Python packages published as source only: built into py3-none-any wheels here.
"$PY" -m pip wheel -q --no-deps -w "$DEST" "$(pin fvcore)" "$(pin iopath)" "$(pin pytorchvideo)"

ls -l "$DEST"
du -ch "$DEST"/*.whl | tail -n 1
