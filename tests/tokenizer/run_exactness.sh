#!/usr/bin/env bash
# Runs exactness.py on the test venv's python (which has `tokenizers`) in a fresh folder:
#   run_exactness.sh TOKENIZER_DRIVER
set -euo pipefail
python=${DSV3_PYTHON:-$DSV3_SOURCE_ROOT/.venv/bin/python}
[ -x "$python" ] || python=python3
if ! "$python" -c 'import tokenizers' 2>/dev/null; then
    echo "$python cannot import tokenizers: run ./run/test.sh, which creates the test venv" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" "$DSV3_SOURCE_ROOT/tests/tokenizer/exactness.py" "$1" "$work"
