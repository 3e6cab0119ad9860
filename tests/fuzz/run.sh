#!/usr/bin/env bash
# Builds one libFuzzer harness with clang and fuzzes it for a while.
#
# Usage: tests/fuzz/run.sh TARGET SECONDS     e.g. tests/fuzz/run.sh toml 600
#
# TARGET names tests/fuzz/fuzz_TARGET.c and its seeds in tests/fuzz/corpus/TARGET/. The clang
# build lives in build-fuzz/ at the repository root and is configured on first use. The fuzzer
# works on a copy of the corpus in a temporary folder, so the seeds stay as committed; inputs
# that crash it are kept in build-fuzz/artifacts/ to be fixed and then added to the corpus.
# Exits non-zero when the fuzzer finds a crash (or the build fails), printing the end of its log.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 TARGET SECONDS" >&2
    exit 2
fi
target=${1#fuzz_}
seconds=$2
# Matches the longest inputs a config is expected to have; longer ones only slow the search.
max_len=4096
# A checkpoint's HDF5 files (with the byte that picks one) reach about 8.5 KiB.
[ "${1#fuzz_}" = checkpoint_h5 ] && max_len=16384

root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/build-fuzz"
corpus="$root/tests/fuzz/corpus/$target"
[ -d "$corpus" ] || { echo "$0: no corpus folder $corpus" >&2; exit 2; }

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$root" -Dfuzz=true -Dcuda=disabled
fi
ninja -C "$build" "tests/fuzz/fuzz_$target"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$build/artifacts"
cp "$corpus"/* "$work/corpus/"

# libFuzzer's progress goes to a log; one line sums it up, the log's end follows a failure.
log="$build/fuzz_$target.log"
status=0
"$build/tests/fuzz/fuzz_$target" "$work/corpus" -max_len="$max_len" \
    -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$target-" >"$log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "$0: fuzz_$target failed (exit $status); crash inputs are in $build/artifacts/, the log is $log" >&2
    exit "$status"
fi
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
cov=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*cov: \([0-9]*\).*/\1/p' "$log")
echo "fuzz_$target: ${runs:-?} inputs in ${seconds} s, coverage ${cov:-?} edges, no crash (log: $log)"
