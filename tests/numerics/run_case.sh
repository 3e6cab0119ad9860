#!/usr/bin/env bash
# Runs one numerics test: a PyTorch reference script writes its case (inputs and expected
# outputs as .npy) into a fresh folder, then the C test reads it and compares.
#   run_case.sh REFERENCE_SCRIPT C_TEST [args for both...]
set -euo pipefail
script=$1 test=$2
shift 2
python=${DSV3_PYTHON:-$DSV3_SOURCE_ROOT/.venv/bin/python}
[ -x "$python" ] || python=/usr/bin/python3
if ! "$python" -c 'import torch' 2>/dev/null; then
    echo "$python cannot import torch: run ./run/test.sh, which creates the test venv" >&2
    exit 1
fi
case_dir=$(mktemp -d)
trap 'rm -rf "$case_dir"' EXIT
"$python" "$script" "$case_dir" "$@"
"$test" "$case_dir" "$@"
