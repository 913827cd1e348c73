#!/usr/bin/env bash
# Regenerate constraints.txt, the locked environment (`make lock`): a fresh virtual environment
# with the project and every extra (test, pep, dask, peers), resolved afresh from PyPI, with
# torch pinned to TORCH_SPEC (which stays outside the lock: the Makefile installs it first);
# then `pip freeze`. Commit the result together with the reports made with it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
pip="$work/venv/bin/pip"
"$pip" install -q "$TORCH_SPEC"
echo "$TORCH_SPEC" > "$work/torch.txt"
"$pip" install -q -c "$work/torch.txt" -e ".[test,pep,dask,peers]"
{
  echo "# The locked environment: every version that \`make test\`, \`make report\` and CI install"
  echo "# (pip constraints; torch is pinned separately by TORCH_SPEC in the Makefile)."
  echo "# Regenerate with \`make lock\` (tools/lock.sh: a fresh venv with every extra, then pip freeze)."
  "$pip" freeze --exclude-editable | grep -v -i -E '^(torch|nvidia|triton)[-=_]'
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
