#!/usr/bin/env bash
# Builds one libFuzzer harness with clang and fuzzes it for a while, or for a number of inputs.
#
# Usage: tests/fuzz/run.sh TARGET SECONDS     e.g. tests/fuzz/run.sh toml 600
#        tests/fuzz/run.sh --runs N TARGET    e.g. tests/fuzz/run.sh --runs 10000000 toml
#
# TARGET names tests/fuzz/fuzz_TARGET.c and its seeds in tests/fuzz/corpus/TARGET/. The clang
# build lives in build-fuzz/ at the repository root and is configured on first use. The fuzzer
# works on a copy of the corpus in a temporary folder, so the seeds stay as committed; inputs
# that crash it are kept in build-fuzz/artifacts/ to be fixed and then added to the corpus.
# With --runs the fuzzer stops after N inputs however long that takes (a long campaign).
# Either way one line reports the inputs run, the time, the inputs per second, the coverage
# (edges and features of the instrumented code) and the corpus reached.
# Exits non-zero when the fuzzer finds a crash (or the build fails), printing the end of its log.
set -euo pipefail

runs=0
if [ $# -eq 3 ] && [ "$1" = --runs ]; then
    runs=$2
    target=${3#fuzz_}
    seconds=0
elif [ $# -eq 2 ] && [ "${1#-}" = "$1" ]; then
    target=${1#fuzz_}
    seconds=$2
else
    echo "usage: $0 TARGET SECONDS | $0 --runs N TARGET" >&2
    exit 2
fi
case "$runs$seconds" in
*[!0-9]*) echo "$0: SECONDS and N are whole numbers" >&2; exit 2 ;;
esac
# Matches the longest inputs a config is expected to have; longer ones only slow the search.
# A checkpoint's HDF5 files (with the byte that picks one) reach about 8.5 KiB.
max_len=4096
[ "$target" = checkpoint_h5 ] && max_len=16384

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
start=$(date +%s)
"$build/tests/fuzz/fuzz_$target" "$work/corpus" -max_len="$max_len" \
    -max_total_time="$seconds" -runs="$((runs > 0 ? runs : -1))" -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$target-" >"$log" 2>&1 || status=$?
took=$(($(date +%s) - start))
if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "$0: fuzz_$target failed (exit $status); crash inputs are in $build/artifacts/, the log is $log" >&2
    exit "$status"
fi
done_runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$done_line")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$done_line")
echo "fuzz_$target: ${done_runs:-?} inputs in ${took} s (${rate:-?}/s), coverage ${cov:-?} edges" \
    "${ft:-?} features, corpus ${corp:-?}, no crash (log: $log)"
