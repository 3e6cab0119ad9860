# Shared by the e2e tests: paths, the MPI environment, and small assertions.
# Every test runs the real executables from the meson build under mpiexec on loopback.
set -euo pipefail
: "${DSV3_SOURCE_ROOT:?run through meson test}" "${DSV3_BUILD_ROOT:?run through meson test}"
BIN=$DSV3_BUILD_ROOT/roles
CONF=$DSV3_SOURCE_ROOT/conf
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Every launch is bounded: a hang is a failure, not a stuck CI.
MPIRUN=(timeout 120 mpiexec --oversubscribe)

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_in FILE TEXT: the file contains the fixed string.
expect_in() { grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "expected '$2' in the output"; }; }

# expect_count FILE TEXT N: the fixed string occurs on exactly N lines.
expect_count() {
    local n
    n=$(grep -cF -- "$2" "$1" || true)
    [ "$n" -eq "$3" ] || { cat "$1" >&2; fail "expected $3 lines with '$2', found $n"; }
}

# run_expect_fail OUT CMD...: the command fails (non-zero, not a timeout) with output in OUT.
run_expect_fail() {
    local out=$1 rc=0
    shift
    "$@" >"$out" 2>&1 || rc=$?
    [ $rc -ne 0 ] || { cat "$out" >&2; fail "expected a non-zero exit from: $*"; }
    [ $rc -ne 124 ] || { cat "$out" >&2; fail "timed out (hang) instead of failing: $*"; }
}
