#!/bin/sh
# Expert servers that run as their own mpiexec job join a training job through ompi-server, and
# the joined job has the same topology as an MPMD launch; a training job whose expert servers
# never come ends with a clear message within its timeout.
#
# usage: join.sh MPIEXEC TEST_TOPOLOGY
# Needs ompi-server on PATH (skips with exit 77 otherwise). Everything stays on loopback.
set -u
mpiexec=$1
test_topology=$2

command -v ompi-server >/dev/null 2>&1 || { echo "ompi-server not found: skipped"; exit 77; }

# Loopback only, whatever the caller's environment says; allowed as root (containers, CI).
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# mpiexec ends a hanging job after this many seconds (a hang is a failure too).
hang_limit_s=60
# The join timeout of the successful case: generous, the two jobs start at the same time.
join_timeout_s=30
# The timeout case: the training job waits this long, and must be gone well within the limit.
alone_timeout_s=3
alone_limit_s=20
layout="--pp 2 --tp 2 --ep 2"

tmp=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ompi-server --no-daemonize -r "$tmp/uri" >"$tmp/server.out" 2>&1 &
server_pid=$!
tries=0
until [ -s "$tmp/uri" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then
        echo "FAIL: ompi-server wrote no URI within 10 s"
        cat "$tmp/server.out"
        exit 1
    fi
    sleep 0.1
done
run() { "$mpiexec" --timeout "$hang_limit_s" --oversubscribe --ompi-server "file:$tmp/uri" "$@"; }
failures=0
service="dsv3-test-join-$$"

# 1. Training side (coordinator + 4 stages) and expert side (4 servers) as two jobs; both check
# every communicator of the merged job against the MPMD layout.
# shellcheck disable=SC2086
run -n 5 "$test_topology" $layout --join accept --service "$service" \
    --timeout "$join_timeout_s" >"$tmp/train.out" 2>&1 &
train_pid=$!
# shellcheck disable=SC2086
run -n 4 "$test_topology" $layout --join connect --service "$service" \
    --timeout "$join_timeout_s" >"$tmp/expert.out" 2>&1
expert_rc=$?
wait "$train_pid"
train_rc=$?
if [ "$train_rc" -ne 0 ] || [ "$expert_rc" -ne 0 ] ||
    ! grep -q "test_topology: ok (training side)" "$tmp/train.out" ||
    ! grep -q "test_topology: ok (expert side)" "$tmp/expert.out"; then
    echo "FAIL: joined job (training exit $train_rc, expert exit $expert_rc)"
    echo "training side:" && sed 's/^/  | /' "$tmp/train.out"
    echo "expert side:" && sed 's/^/  | /' "$tmp/expert.out"
    failures=$((failures + 1))
else
    echo "ok: expert job joined the training job; merged topology equals the MPMD one"
fi

# 2. A training job whose expert servers never come: one clear line, non-zero exit, quickly.
start=$(date +%s)
# shellcheck disable=SC2086
run -n 5 "$test_topology" $layout --join accept --service "$service-alone" \
    --timeout "$alone_timeout_s" >"$tmp/alone.out" 2>&1
rc=$?
took=$(($(date +%s) - start))
message="no expert servers joined service '$service-alone' within $alone_timeout_s s; start them with \`./run/expert_servers.sh\`"
count=$(grep -cF -- "$message" "$tmp/alone.out")
if [ "$rc" -eq 0 ] || [ "$count" -ne 1 ] || [ "$took" -ge "$alone_limit_s" ]; then
    echo "FAIL: training job alone: exit $rc after $took s, message seen $count times"
    echo "  want (once, non-zero exit, under $alone_limit_s s): $message"
    sed 's/^/  | /' "$tmp/alone.out"
    failures=$((failures + 1))
else
    echo "ok: training job alone stopped after $took s with exit $rc and one clear message"
fi

# 3. Expert servers whose training job never comes (nor left a stale name): a clean timeout
# error on every rank, printed once.
start=$(date +%s)
# shellcheck disable=SC2086
run -n 4 "$test_topology" $layout --join connect --service "$service-alone" \
    --timeout "$alone_timeout_s" >"$tmp/lonely.out" 2>&1
rc=$?
took=$(($(date +%s) - start))
message="no training job published the expert service '$service-alone' within $alone_timeout_s s"
count=$(grep -cF -- "$message" "$tmp/lonely.out")
if [ "$rc" -eq 0 ] || [ "$count" -ne 1 ] || [ "$took" -ge "$alone_limit_s" ]; then
    echo "FAIL: expert job alone: exit $rc after $took s, message seen $count times"
    echo "  want (once, non-zero exit, under $alone_limit_s s): $message"
    sed 's/^/  | /' "$tmp/lonely.out"
    failures=$((failures + 1))
else
    echo "ok: expert job alone stopped after $took s with exit $rc and one clear message"
fi

[ "$failures" -eq 0 ] || { echo "$failures case(s) failed"; exit 1; }
