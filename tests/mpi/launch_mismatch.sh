#!/bin/sh
# Wrong launches end on every rank with one clear message and a non-zero exit, quickly.
#
# usage: launch_mismatch.sh MPIEXEC TEST_TOPOLOGY
# Each case launches test_topology with a layout that does not fit the ranks (or roles in the
# wrong order) and checks the exit code and that the expected message is printed exactly once
# (every rank fails alike; only job rank 0 prints).
set -u
mpiexec=$1
test_topology=$2

# Loopback only, whatever the caller's environment says; allowed as root (containers, CI).
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# mpiexec ends a hanging case after this many seconds (a hang is a failure too).
hang_limit_s=60
failures=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# expect NRANKS MESSAGE ARGS...: the launch fails and prints MESSAGE once.
expect() {
    nranks=$1 message=$2
    shift 2
    start=$(date +%s)
    "$mpiexec" --timeout "$hang_limit_s" --oversubscribe -n "$nranks" "$test_topology" "$@" \
        >"$out" 2>&1
    rc=$?
    took=$(($(date +%s) - start))
    count=$(grep -cF -- "$message" "$out")
    if [ "$rc" -eq 0 ] || [ "$count" -ne 1 ] || grep -q "MPI_ABORT\|timed out\|TIMEOUT" "$out"; then
        echo "FAIL: -n $nranks $*: exit $rc, message seen $count times (want non-zero and once):"
        echo "  want: $message"
        sed 's/^/  | /' "$out"
        failures=$((failures + 1))
    else
        echo "ok: -n $nranks $* (exit $rc, ${took} s)"
    fi
}

expect 4 "parallelism: pp 2 × dp_replicate 1 × dp_shard 2 × cp 1 × tp 1 = 4, but 3 stage processes were launched" \
    --pp 2 --dp-shard 2
expect 7 "parallelism: pp 2 × dp_replicate 1 × dp_shard 2 × cp 1 × tp 2 = 8, but 6 stage processes were launched" \
    --pp 2 --dp-shard 2 --tp 2
expect 4 "parallelism: cannot fill data_parallel_shard_degree: 3 stage processes are not a multiple of pp 2 × dp_replicate 1 × cp 1 × tp 1 = 2" \
    --pp 2 --dp-shard -1
expect 6 "parallelism: expert_parallel_degree 2 × pipeline_parallel_degree 2 = 4 expert servers expected, but 3 were launched" \
    --pp 2 --ep 2 --roles csseee
expect 4 "parallelism: expert_parallel_degree is 1, so the job takes no expert servers, but 1 was launched" \
    --dp-shard 2 --roles csse
expect 4 "job rank 2 is dsv3-coordinator, but the coordinator must be the first app of the mpiexec line" \
    --roles sscs
expect 3 "no dsv3-coordinator was launched" \
    --roles sss
expect 4 "job rank 3 is dsv3-stage, but job rank 2 before it is dsv3-expert" \
    --roles csess

expect 3 "job rank 2 reported role 7, which is not a dsv3 role" \
    --roles csx

[ "$failures" -eq 0 ] || { echo "$failures case(s) failed"; exit 1; }
