#!/usr/bin/env bash
# The user's entry points: run/train.sh works the layout out from the config and NPROC and
# launches one MPMD job; with expert_server_launch = "join", run/expert_servers.sh starts the
# expert servers as their own job and they join the training job through ompi-server.
source "$(dirname "$0")/lib.sh"
export BUILD_DIR=$DSV3_BUILD_ROOT MPIEXEC_FLAGS=--oversubscribe
train=$DSV3_SOURCE_ROOT/run/train.sh
experts=$DSV3_SOURCE_ROOT/run/expert_servers.sh
out=$WORK/train.out

# MPMD: 1 coordinator + 4 stage ranks (dp_shard filled from NPROC = 2 × tp 2) + 2 expert servers,
# every process launched and every communicator built, stopping before training.
DRY_RUN_LAUNCH=1 NPROC=4 timeout 120 "$train" --job.dry_run --parallelism.tensor_parallel_degree 2 \
    --parallelism.expert_parallel_degree 2 >"$out" 2>&1 || { cat "$out"; fail "train.sh failed"; }
expect_in "$out" "-n 4 $BIN/dsv3-stage : -n 2 $BIN/dsv3-expert"
expect_in "$out" "pp 1 × dp_replicate 1 × dp_shard 2 × cp 1 × tp 2 = 4 stage ranks; ep 2 → 2 expert servers (mpmd)"
expect_in "$out" "start-up: 7 ranks ready"

# Dry run through the script: only the coordinator runs.
NPROC=64 timeout 60 "$train" --job.dry_run --parallelism.pipeline_parallel_degree 2 >"$out" 2>&1 ||
    { cat "$out"; fail "dry run through train.sh failed"; }
expect_count "$out" "dry run: rank " 65

# --help lists the keys; an explicit --job.dry_run false trains (the coordinator reads the
# arguments, not the script).
timeout 60 "$train" --help >"$out" 2>&1 || { cat "$out"; fail "train.sh --help failed"; }
expect_in "$out" "usage: dsv3-coordinator"
expect_in "$out" "--training.steps"
NPROC=1 timeout 120 "$train" --job.dry_run false --training.steps 1 --training.seq_len 64 >"$out" 2>&1 ||
    { cat "$out"; fail "train.sh --job.dry_run false failed"; }
expect_in "$out" "final training loss"

# A joined layout that training cannot run (the global batch does not split over the two
# data-parallel ranks) is refused by both scripts before anything starts.
refused=(--parallelism.expert_server_launch join --parallelism.expert_parallel_degree 2
    --training.local_batch_size 2 --training.global_batch_size 6)
for script in "$train" "$experts"; do
    run_expect_fail "$out" env NPROC=2 timeout 60 "$script" "${refused[@]}"
    expect_in "$out" "training.global_batch_size 6 is not a multiple of"
    expect_count "$out" "ompi-server" 0
    expect_count "$out" "rendezvous" 0
done

# Expert servers joined by hand to a training job of such a layout say why they stop too.
ompi-server --no-daemonize -r "$WORK/manual.uri" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do [ -s "$WORK/manual.uri" ] && break; sleep 0.1; done
manual=(timeout 120 mpiexec --oversubscribe --ompi-server "file:$WORK/manual.uri")
"${manual[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" "${refused[@]}" \
    --comm.init_timeout_seconds 60 : -n 2 "$BIN/dsv3-stage" >"$out" 2>&1 &
train_pid=$!
run_expect_fail "$WORK/manual.out" "${manual[@]}" -n 2 "$BIN/dsv3-expert" --join dsv3-experts --join-timeout 60
! wait $train_pid || fail "the training job of a layout training cannot run succeeded"
expect_in "$out" "training.global_batch_size 6 is not a multiple of"
expect_in "$WORK/manual.out" "training.global_batch_size 6 is not a multiple of"
kill $server_pid
wait $server_pid 2>/dev/null || true
trap 'rm -rf "$WORK"' EXIT

# Joined expert servers: two jobs, one rendezvous.
export DSV3_OMPI_SERVER_URI=$WORK/ompi-server.uri
join=(--job.dry_run --parallelism.expert_server_launch join --parallelism.expert_parallel_degree 2
    --parallelism.pipeline_parallel_degree 2 --comm.init_timeout_seconds 60)
DRY_RUN_LAUNCH=1 NPROC=2 timeout 120 "$train" "${join[@]}" >"$out" 2>&1 &
train_pid=$!
NPROC=2 timeout 120 "$experts" "${join[@]}" >"$WORK/experts.out" 2>&1 || {
    cat "$WORK/experts.out"
    fail "expert_servers.sh failed"
}
wait $train_pid || { cat "$out"; fail "train.sh with joined expert servers failed"; }
expect_in "$out" "waiting up to 60 s for expert servers to join through service 'dsv3-experts'"
expect_in "$out" "pp 2 × dp_replicate 1 × dp_shard 1 × cp 1 × tp 1 = 2 stage ranks; ep 2 → 4 expert servers (join)"
expect_in "$out" "start-up: 7 ranks ready"
expect_in "$WORK/experts.out" "joining the training job through service 'dsv3-experts'"
[ ! -e "$DSV3_OMPI_SERVER_URI" ] || fail "train.sh left its ompi-server rendezvous file behind"

# An expert server job lost right after joining: the training job stops within its start-up
# timeout, saying why, instead of waiting for ever in a collective over both jobs.
join_lost=(--job.dry_run --parallelism.expert_server_launch join --parallelism.expert_parallel_degree 2
    --parallelism.pipeline_parallel_degree 2 --comm.init_timeout_seconds 5)
start_s=$SECONDS
DRY_RUN_LAUNCH=1 NPROC=2 timeout 120 "$train" "${join_lost[@]}" >"$out" 2>&1 &
train_pid=$!
DSV3_JOB_COMM_TEST_EXIT=1 NPROC=2 timeout 120 "$experts" "${join_lost[@]}" >"$WORK/experts.out" 2>&1 || true
! wait $train_pid || { cat "$out"; fail "the training job succeeded without its expert servers"; }
# Open MPI's mpiexec sometimes crashes itself when the joined job vanishes; then the ranks' own
# message is lost with it, and train.sh says what happened instead.
if grep -q "mpiexec itself ended on SIG" "$out"; then
    echo "mpiexec crashed when the expert server job was lost (Open MPI); train.sh said so"
else
    expect_in "$out" "start-up did not finish within comm.init_timeout_seconds = 5 s after the join: the expert server job stopped answering"
fi
[ $((SECONDS - start_s)) -lt 60 ] || fail "the training job took $((SECONDS - start_s)) s to stop"
# Either way no rank outlives its start-up deadline.
for _ in $(seq 50); do pgrep -f "$DSV3_BUILD_ROOT/roles/dsv3-" >/dev/null || break; sleep 0.2; done
! pgrep -af "$DSV3_BUILD_ROOT/roles/dsv3-" || fail "ranks of the lost join were still running 10 s after train.sh returned"
echo "run scripts: ok"
