#!/usr/bin/env bash
# Expert servers started as their own job (parallelism.expert_server_launch = "join"):
# run/train.sh waits, run/expert_servers.sh joins, and the two jobs train exactly as one MPMD
# job would (every step's loss, grad norm and LR bit for bit). Then a lost peer, both ways:
# SIGKILL to the expert server job stops the training job, and SIGKILL to the training job
# stops the expert servers, each within comm.train_timeout_seconds plus a few seconds, non-zero,
# with a message naming the role that went silent, and no rank left behind.
source "$(dirname "$0")/lib.sh"
export BUILD_DIR=$DSV3_BUILD_ROOT MPIEXEC_FLAGS=--oversubscribe DSV3_OMPI_SERVER_URI=$WORK/ompi-server.uri
train=$DSV3_SOURCE_ROOT/run/train.sh
experts=$DSV3_SOURCE_ROOT/run/expert_servers.sh
ARGS=(--job.config_file "$CONF/debug_model.toml" --training.seq_len 32 --training.local_batch_size 4
    --metrics.log_freq 1 --metrics.peak_tflops 1 --validation.enable false
    --parallelism.expert_parallel_degree 2)
JOIN=(--parallelism.expert_server_launch join --comm.init_timeout_seconds 60)

NPROC=1 timeout 120 "$train" "${ARGS[@]}" --training.steps 10 --job.dump_folder "$WORK/mpmd" >"$WORK/mpmd.out" 2>&1 ||
    { cat "$WORK/mpmd.out"; fail "the MPMD run failed"; }

NPROC=1 timeout 120 "$train" "${ARGS[@]}" "${JOIN[@]}" --training.steps 10 --job.dump_folder "$WORK/join" \
    >"$WORK/join.out" 2>&1 &
train_pid=$!
NPROC=1 timeout 120 "$experts" "${ARGS[@]}" "${JOIN[@]}" --training.steps 10 >"$WORK/experts.out" 2>&1 ||
    { cat "$WORK/experts.out"; fail "expert_servers.sh failed"; }
wait $train_pid || { cat "$WORK/join.out"; fail "train.sh with joined expert servers failed"; }
expect_in "$WORK/join.out" "ep 2 → 2 expert servers (join)"
expect_in "$WORK/experts.out" "expert server 0 (stage 0, experts 0–3): 10 steps"
same_steps "$WORK/mpmd" "$WORK/join" 1 10

# lost NAME VICTIMS...: a long joined run; after 3 logged steps every process matching a VICTIMS
# pattern gets SIGKILL; both scripts must have returned within 10 s + 15 s, and no rank remains.
LONG=(--training.steps 100000 --comm.train_timeout_seconds 10)
lost() {
    local name=$1
    shift
    NPROC=1 timeout 120 "$train" "${ARGS[@]}" "${JOIN[@]}" "${LONG[@]}" --job.dump_folder "$WORK/$name" \
        >"$WORK/$name.out" 2>&1 &
    local train_pid=$!
    NPROC=1 timeout 120 "$experts" "${ARGS[@]}" "${JOIN[@]}" "${LONG[@]}" >"$WORK/$name.experts.out" 2>&1 &
    local experts_pid=$!
    for _ in $(seq 600); do
        [ "$(cat "$WORK/$name/metrics.jsonl" 2>/dev/null | wc -l)" -ge 3 ] && break
        sleep 0.1
    done
    local start_s=$SECONDS pattern
    for pattern in "$@"; do pkill -KILL -f "$pattern" || true; done
    ! wait $train_pid || { cat "$WORK/$name.out"; fail "$name: train.sh succeeded"; }
    ! wait $experts_pid || { cat "$WORK/$name.experts.out"; fail "$name: expert_servers.sh succeeded"; }
    [ $((SECONDS - start_s)) -le 25 ] || fail "$name: the jobs took $((SECONDS - start_s)) s to stop"
    for _ in $(seq 50); do pgrep -f "$DSV3_BUILD_ROOT/roles/dsv3-" >/dev/null || break; sleep 0.2; done
    ! pgrep -af "$DSV3_BUILD_ROOT/roles/dsv3-" || fail "$name: ranks still running 10 s after both scripts returned"
    echo "$name: both jobs stopped $((SECONDS - start_s)) s after the kill"
}

# expect_lost OUT TEXT: the survivor's rank named the silent role — unless Open MPI's mpiexec
# crashed itself when the other job vanished (it can), which train.sh and expert_servers.sh say.
expect_lost() {
    if grep -q "mpiexec itself ended on SIG" "$1" && ! grep -qF "$2" "$1"; then
        echo "mpiexec crashed when the other job was lost (Open MPI); the script said so"
    else
        expect_in "$1" "$2"
    fi
}

lost servers_killed "mpiexec.*$DSV3_BUILD_ROOT/roles/dsv3-expert" "$DSV3_BUILD_ROOT/roles/dsv3-expert"
expect_lost "$WORK/servers_killed.out" "expert server 0 (job rank 2), expert server 1 (job rank 3) have not answered for 10 s"

lost training_killed "mpiexec.*$DSV3_BUILD_ROOT/roles/dsv3-coordinator" "$DSV3_BUILD_ROOT/roles/dsv3-coordinator" \
    "$DSV3_BUILD_ROOT/roles/dsv3-stage"
expect_lost "$WORK/training_killed.experts.out" "stage rank 0 (job rank 1) has not answered for 10 s"
echo "expert join: ok"
