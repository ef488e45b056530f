#!/usr/bin/env bash
# On the GPU machine, from anywhere: install the carried wheels into a private folder (no network,
# nothing of the machine's own packages replaced), then run the GPU check.
#
#   bash bench/gpu/run.sh OUT_DIR [gpu_check.py options ...]
#
# Wheels: bench/gpu/wheels (bench/gpu/download_wheels.sh fills it elsewhere; override with WHEELS=).
# FURLORA_COMMIT=<sha> names the commit in the results when the copy has no .git folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT_DIR="${1:?usage: bash bench/gpu/run.sh OUT_DIR [gpu_check.py options]}"
shift
WHEELS="${WHEELS:-$ROOT/bench/gpu/wheels}"
SITE="${SITE:-$(mktemp -d)/site}"
PY="${PYTHON:-python3}"

if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "note: no wheels in $WHEELS; using the packages already installed" >&2
fi
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export FURLORA_CACHE="${FURLORA_CACHE:-$(mktemp -d)}"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu',
torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
exec "$PY" "$ROOT/bench/gpu_check.py" --out "$OUT_DIR" "$@"
