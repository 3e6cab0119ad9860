#!/usr/bin/env bash
# Runs a script of tests/tokenizer on the test venv's python (which has `tokenizers`) with a
# fresh folder as its last argument:
#   run_exactness.sh SCRIPT.py ARG...
set -euo pipefail
python=${DSV3_PYTHON:-$DSV3_SOURCE_ROOT/.venv/bin/python}
[ -x "$python" ] || python=python3
if ! "$python" -c 'import tokenizers' 2>/dev/null; then
    echo "$python cannot import tokenizers: run ./run/test.sh, which creates the test venv" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
script=$1
shift
"$python" "$DSV3_SOURCE_ROOT/tests/tokenizer/$script" "$@" "$work"
