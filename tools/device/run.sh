#!/usr/bin/env bash
# One device session, one script: install what the GPU image lacks from carried wheels (no
# network there), install this project without touching the image's packages, then run
# `imaml-verify gpu`, writing into $OUT (the folder the device tool brings back) as it goes.
#
#   tools/device/run.sh                 # on the device: evidence into $OUT/reports/gpu
#   tools/device/run.sh --dry-run       # anywhere: the same path at tiny sizes on the CPU
#
# Environment: OUT (default: ./out-device), PYTHON (python3), BUDGET (420 s for the gpu
# command), WHEELS (wheels/, filled by tools/device/wheels.sh). Extra arguments go to
# `imaml-verify gpu` (e.g. --stage fewshot to rerun one stage into the same folder).
# Exit status: the gpu command's (0: every stage passed), 3 when the wheels cannot be installed.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 3
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/out-device}
BUDGET=${BUDGET:-420}
WHEELS=${WHEELS:-$ROOT/wheels}
SITE=$ROOT/.device-site
DEST=$OUT/reports/gpu
mkdir -p "$DEST"
LOG=$OUT/device-run.log
exec > >(tee -a "$LOG") 2>&1
t0=$(date +%s)
echo "== $(date -u +%FT%TZ) $($PY --version 2>&1) on $(hostname); out: $DEST"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader

# 1. what the image lacks (module:package), installed from the carried wheels only
missing=()
for pair in array_api_compat:array-api-compat jsonschema:jsonschema referencing:referencing \
            jsonschema_specifications:jsonschema-specifications rpds:rpds-py attr:attrs; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair##*:}")
done
# referencing needs a typing_extensions whose TypeVar takes a default (the image's torch brings one)
"$PY" -c "from typing_extensions import TypeVar; TypeVar('D', default=int)" 2>/dev/null \
    || missing+=(typing-extensions)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing from $WHEELS into $SITE: ${missing[*]}"
    "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$SITE" \
        "${missing[@]}" || { echo "!! cannot install ${missing[*]} from $WHEELS"; exit 3; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

# 2. the project itself, editable, no dependencies (torch & co. are the image's)
if ! "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e "$ROOT"; then
    echo "!! editable install failed; running from the source tree (PYTHONPATH)"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import array_api_compat, jsonschema, torch, verify; print('== imports ok: torch',
torch.__version__, 'cuda', torch.cuda.is_available())" || exit 3
echo "== set-up took $(( $(date +%s) - t0 )) s"

# 3. the evidence; the gpu command writes summary.json as each stage starts and ends
"$PY" -m verify gpu --out "$DEST" --budget "$BUDGET" "$@"
rc=$?
echo "== $(date -u +%FT%TZ) exit $rc after $(( $(date +%s) - t0 )) s"
exit $rc
