#!/usr/bin/env bash
# The GPU check (tools/check_gpu.py) on a machine without network access:
#
#   bash tools/check_gpu.sh OUT [check_gpu.py options]
#
# When .whl/ holds wheels (tools/gpu_wheels.sh makes them), they are installed without
# their dependencies into a scratch folder ($CHECK_GPU_SITE, default /tmp/video_gc_site)
# that goes in front of PYTHONPATH; the repository root goes in front of that, so that
# video_gc is imported from this checkout. Then tools/check_gpu.py runs with the options.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${CHECK_GPU_SITE:-/tmp/video_gc_site}
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "error: installing .whl/*.whl into $SITE failed" >&2; exit 3; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PY" tools/check_gpu.py "$@"
