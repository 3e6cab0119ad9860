#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test suite:
#   ./run/test.sh              the formatting check (clang-format), unit, mpi, e2e (and cuda,
#                              skipped without a GPU), then the unit suite again under
#                              AddressSanitizer + UBSan, then a short fuzz run
#   ./run/test.sh --suite unit only the given meson suite(s) of the main build
# FUZZ_SECONDS (default 60) bounds the fuzz run; 0 skips it.
set -euo pipefail
source "$(dirname "$0")/common.sh"

dsv3_ensure_packages "${DSV3_RUN_PACKAGES[@]}" "${DSV3_TEST_PACKAGES[@]}"
dsv3_ensure_venv
export PATH="$DSV3_VENV/bin:$PATH" # the reference scripts run on the venv's python
dsv3_mpi_env

# Formatting first: the C and CUDA sources follow .clang-format exactly.
dsv3_log "checking the formatting of the C and CUDA sources (.clang-format)"
mapfile -t sources < <(cd "$DSV3_ROOT" && find common kernels roles tests -name '*.[ch]' -o -name '*.cu' -o -name '*.cuh' | sort)
(cd "$DSV3_ROOT" && clang-format --dry-run --Werror "${sources[@]}") ||
    dsv3_die "the files above are not formatted: run clang-format -i on them"

dsv3_ensure_build "$DSV3_BUILD_DIR" -Dcuda=auto
results=()
run_suites() { # run_suites BUILD_DIR [meson test args...]
    local dir=$1
    shift
    local rc=0
    meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" || rc=$?
    results+=("$dir/meson-logs/testlog.json")
    return $rc
}

status=0
if [ $# -gt 0 ]; then
    run_suites "$DSV3_BUILD_DIR" "$@" || status=1
else
    run_suites "$DSV3_BUILD_DIR" || status=1
    asan_dir=$DSV3_ROOT/build-asan
    dsv3_ensure_build "$asan_dir" -Dcuda=disabled -Db_sanitize=address,undefined -Db_lundef=false
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 run_suites "$asan_dir" --suite unit || status=1
    if [ "${FUZZ_SECONDS:-60}" -gt 0 ]; then
        "$DSV3_ROOT/tests/fuzz/run.sh" toml "${FUZZ_SECONDS:-60}" || status=1
        "$DSV3_ROOT/tests/fuzz/run.sh" safetensors "${FUZZ_SECONDS:-60}" || status=1
        "$DSV3_ROOT/tests/fuzz/run.sh" json_text "${FUZZ_SECONDS:-60}" || status=1
        "$DSV3_ROOT/tests/fuzz/run.sh" manifest "${FUZZ_SECONDS:-60}" || status=1
        "$DSV3_ROOT/tests/fuzz/run.sh" token_file "${FUZZ_SECONDS:-60}" || status=1
        "$DSV3_ROOT/tests/fuzz/run.sh" tokenizer_json "${FUZZ_SECONDS:-60}" || status=1
        # Only what the manifest check guards: libhdf5 1.10.8 crashes on some corrupt files that
        # it is handed past that check (tests/fuzz/fuzz_checkpoint_h5.c).
        DSV3_FUZZ_HDF5=0 "$DSV3_ROOT/tests/fuzz/run.sh" checkpoint_h5 "${FUZZ_SECONDS:-60}" || status=1
    fi
fi

# The end of every failed test's output again, then one plain closing line over every suite
# that ran: the last lines of a long run say what failed and why.
"$DSV3_VENV/bin/python" - "${results[@]}" <<'PY'
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0, "TIMEOUT": 0, "EXPECTEDFAIL": 0, "UNEXPECTEDPASS": 0, "ERROR": 0}
failures = []
for path in sys.argv[1:]:
    for line in open(path):
        test = json.loads(line)
        result = test["result"]
        counts[result] = counts.get(result, 0) + 1
        if result in ("FAIL", "TIMEOUT", "UNEXPECTEDPASS", "ERROR"):
            failures.append(test)
for test in failures:
    output = (test.get("stdout") or "") + (test.get("stderr") or "")
    print(f"--- {test['name']} ended {test['result']} after {test['duration']:.0f} s; its last lines:")
    print("\n".join(output.rstrip().splitlines()[-25:]))
passed = counts["OK"] + counts["EXPECTEDFAIL"]
failed = counts["FAIL"] + counts["TIMEOUT"] + counts["UNEXPECTEDPASS"] + counts["ERROR"]
for test in failures:
    print(f"failed: {test['name']}")
print(f"{passed} passed, {failed} failed, {counts['SKIP']} skipped")
PY
exit $status
