#!/usr/bin/env bash
# A rank that stops answering ends the whole job, quickly, with one message naming it — never a
# hang. A real training job (the coordinator and 2 stage ranks, tiny steps, 3 s of
# comm.train_timeout_seconds) runs until step 3; then the test stops one process with SIGSTOP:
# a stage rank (the coordinator must name it), the coordinator (the stage ranks must name it), or
# one of 2 expert servers (a stage rank or the coordinator must name it).
# The job must end non-zero within LIMIT_S of the stop, and none of its processes may be left.
source "$(dirname "$0")/lib.sh"
SMALL=(--model.dim 64 --model.n_layers 3 --model.n_dense_layers 1 --model.vocab_size 256 --model.n_heads 2
    --model.inter_dim 128 --model.moe_inter_dim 32 --model.num_experts 4 --model.top_k 2 --model.kv_lora_rank 16
    --model.qk_nope_head_dim 16 --model.qk_rope_head_dim 8 --model.v_head_dim 16
    --training.seq_len 32 --training.local_batch_size 2 --training.steps 1000000 --metrics.log_freq 1
    --validation.enable false --comm.train_timeout_seconds 3)
# Seconds from the stop to the end of the job: the deadline (3 s), the grace period of the pings
# (2 s), MPI_Abort, and room for a loaded machine.
LIMIT_S=20
# Seconds a job may take to reach step 3, and its processes to disappear after mpiexec.
START_LIMIT_S=120
GONE_LIMIT_S=10

# Every process of the job under test, for the clean-up: a stopped one is continued and killed.
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -CONT "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

alive() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]; }

# The job's extra config overrides and expert servers (none at first).
EXTRA=() SERVERS=()

# run_and_stop NAME PROGRAM WORLD_RANK: starts the job, waits for step 3, SIGSTOPs the process
# that runs PROGRAM as MPI_COMM_WORLD rank WORLD_RANK, and waits for the job to end. Sets rc and
# took (seconds from the stop to the end); the output is $WORK/NAME.out.
run_and_stop() {
    local name=$1 program=$2 world_rank=$3
    local out=$WORK/$name.out dump=$WORK/$name
    mpiexec --oversubscribe -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" \
        "${SMALL[@]}" "${EXTRA[@]}" --job.dump_folder "$dump" : -n 2 "$BIN/dsv3-stage" "${SERVERS[@]}" >"$out" 2>&1 &
    local launcher=$!
    pids=("$launcher")
    local deadline=$((SECONDS + START_LIMIT_S))
    until [ -f "$dump/metrics.jsonl" ] && [ "$(wc -l <"$dump/metrics.jsonl")" -ge 3 ]; do
        alive "$launcher" || { cat "$out"; fail "$name: the job ended before step 3"; }
        [ $SECONDS -lt $deadline ] || { cat "$out"; fail "$name: no step 3 after ${START_LIMIT_S} s"; }
        sleep 0.1
    done
    # The ranks are mpiexec's children; MPI tells each its rank in the environment.
    local pid victim=""
    for pid in $(pgrep -P "$launcher"); do
        pids+=("$pid")
        [ "$(basename "$(readlink "/proc/$pid/exe")")" = "$program" ] || continue
        tr '\0' '\n' <"/proc/$pid/environ" | grep -qx "OMPI_COMM_WORLD_RANK=$world_rank" && victim=$pid
    done
    [ -n "$victim" ] || { cat "$out"; fail "$name: no $program process with world rank $world_rank"; }
    kill -STOP "$victim"
    local start
    start=$(date +%s.%N)
    deadline=$((SECONDS + 3 * LIMIT_S))
    while alive "$launcher" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    alive "$launcher" && { cat "$out"; fail "$name: the job still runs $((3 * LIMIT_S)) s after the stop (a hang)"; }
    rc=0
    wait "$launcher" || rc=$?
    # No process of the job is left, the stopped one included.
    deadline=$((SECONDS + GONE_LIMIT_S))
    for pid in "${pids[@]}"; do
        while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        alive "$pid" && { ps -o pid,stat,args -p "$pid"; fail "$name: process $pid was left behind"; }
    done
    [ "$rc" -ne 0 ] || { cat "$out"; fail "$name: the job exited 0 after a rank stopped"; }
    awk -v t="$took" -v limit="$LIMIT_S" 'BEGIN { exit !(t <= limit) }' ||
        { cat "$out"; fail "$name: the job took $took s to end after the stop (limit $LIMIT_S s)"; }
    echo "$name: exit $rc, $took s after the stop"
}

# A stage rank stops: the coordinator, which waits for its report, names it; nobody else is
# called silent.
run_and_stop stage dsv3-stage 2
out=$WORK/stage.out
expect_in "$out" "stage rank 1 (job rank 2) has not answered for 3 s: stopped, dead, or computing longer than comm.train_timeout_seconds = 3"
grep -E '^\[coordinator 0\] error: timeout: stage rank 1 \(job rank 2\) has not answered' "$out" >/dev/null ||
    grep -E '^\[stage 1\] error: timeout: stage rank 1 \(job rank 2\) has not answered' "$out" >/dev/null ||
    { cat "$out"; fail "stage: neither the coordinator nor stage rank 0 named stage rank 1"; }
if grep -E "(stage rank 0 \(job rank 1\)|the coordinator \(job rank 0\)) ha(s|ve) not answered" "$out"; then
    fail "stage: a live rank was named as silent"
fi

# The coordinator stops: the stage ranks, which wait for its next plan or batch, name it.
run_and_stop coordinator dsv3-coordinator 0
out=$WORK/coordinator.out
grep -E '^\[stage [12]\] error: timeout: the coordinator \(job rank 0\) has not answered for 3 s: stopped, dead, or computing longer than comm.train_timeout_seconds = 3' "$out" >/dev/null ||
    { cat "$out"; fail "coordinator: no stage rank named the stopped coordinator"; }
if grep -E "stage rank [01] \(job rank [12]\) ha(s|ve) not answered" "$out"; then
    fail "coordinator: a live stage rank was named as silent"
fi
# An expert server of a job with 2 stopped: whoever times out first (a stage rank waiting for its
# outputs, or the coordinator waiting for the step's reports) names it.
EXTRA=(--parallelism.expert_parallel_degree 2) SERVERS=(: -n 2 "$BIN/dsv3-expert")
run_and_stop expert dsv3-expert 4
out=$WORK/expert.out
grep -E '^\[(stage [12]|coordinator 0)\] error: timeout: (expert server 0 \(job rank 3\), )?expert server 1 \(job rank 4\) ha(s|ve) not answered for 3 s' "$out" >/dev/null ||
    { cat "$out"; fail "expert: neither a stage rank nor the coordinator named the stopped expert server"; }
echo "silent rank: ok"
