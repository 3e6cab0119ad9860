#!/usr/bin/env bash
# Stop signals: SIGTERM to run/train.sh (forwarded to the job as SIGUSR1), SIGUSR1 to one stage
# rank only, and two signals in a row each make the job save the state after the current step
# and exit 0 with one line naming the step, leaving no process behind; running the same command
# again resumes, and every later step's loss, grad norm and LR equal the uninterrupted run's
# bitwise. With checkpoint.enable = false a signal still saves.
source "$(dirname "$0")/lib.sh"
export BUILD_DIR=$DSV3_BUILD_ROOT MPIEXEC_FLAGS=--oversubscribe
train=$DSV3_SOURCE_ROOT/run/train.sh
SMALL=("${SMALL_MODEL[@]}" --training.steps 100 --metrics.log_freq 1
    --lr_scheduler.warmup_steps 3 --checkpoint.interval 100)

# start DIR [overrides...]: the job in the background through run/train.sh (2 stage ranks) under
# a timeout; sets pid (the timeout's; the script is its child).
start() {
    local dir=$1
    shift
    NPROC=2 timeout --foreground 300 "$train" "${SMALL[@]}" --job.dump_folder "$dir" "$@" >>"$dir.out" 2>&1 &
    pid=$!
}

# after_steps DIR N: waits until the job of DIR has logged N steps.
after_steps() {
    for _ in $(seq 600); do
        [ "$(cat "$1/metrics.jsonl" 2>/dev/null | wc -l)" -ge "$2" ] && return 0
        sleep 0.1
    done
    fail "$1: no $2 steps logged within 60 s"
}

# stopped DIR: the job exited 0 after saving; sets step to the saved step.
stopped() {
    local rc=0
    wait "$pid" || rc=$?
    [ $rc -eq 0 ] || { cat "$1.out"; fail "$1: the signalled job exited $rc"; }
    local line
    line=$(grep -F "stopping on " "$1.out") || { cat "$1.out"; fail "$1: no line saying where the job stopped"; }
    [ "$(wc -l <<<"$line")" -eq 1 ] || fail "$1: more than one stop line"
    [ -z "$(pgrep -f -- "--job.dump_folder $1" || true)" ] || fail "$1: processes of the job outlived it"
    step=$(sed -n 's/.*after step \([0-9]*\) of .*/\1/p' <<<"$line")
}

start "$WORK/straight"
wait "$pid" || { cat "$WORK/straight.out"; fail "uninterrupted run"; }

# 1. SIGTERM to run/train.sh.
start "$WORK/term" --checkpoint.enable
after_steps "$WORK/term" 3
kill -TERM "$(pgrep -P "$pid")"
stopped "$WORK/term"
expect_in "$WORK/term.out" "stopping on SIGUSR1 after step $step of 100: its state is saved in $WORK/term/checkpoint/step-$step"
start "$WORK/term" --checkpoint.enable
wait "$pid" || { cat "$WORK/term.out"; fail "resumed run"; }
expect_in "$WORK/term.out" "resumed from $WORK/term/checkpoint/step-$step"
same_steps "$WORK/straight" "$WORK/term" $((step + 1)) 100

# 2. SIGUSR1 to one stage rank of a job that does not checkpoint: it saves anyway.
start "$WORK/one"
after_steps "$WORK/one" 3
script_pid=$(pgrep -P "$pid") # timeout → run/train.sh → mpiexec → ranks
mpiexec_pid=$(pgrep -P "$script_pid" -x mpiexec)
kill -USR1 "$(pgrep -P "$mpiexec_pid" -f dsv3-stage | tail -1)"
stopped "$WORK/one"
expect_in "$WORK/one.out" "stopping on SIGUSR1 after step $step of 100"
expect_in "$WORK/one.out" "run the same command again to resume from it (with checkpoint.enable = true)"
start "$WORK/one" --checkpoint.enable
wait "$pid" || { cat "$WORK/one.out"; fail "resumed run"; }
same_steps "$WORK/straight" "$WORK/one" $((step + 1)) 100

# 3. Two signals in a row: still one save, nothing half-written.
start "$WORK/twice" --checkpoint.enable
after_steps "$WORK/twice" 3
script_pid=$(pgrep -P "$pid")
kill -TERM "$script_pid"
sleep 0.05
kill -USR1 "$script_pid" 2>/dev/null || true # the job may be done already
stopped "$WORK/twice"
[ "$(ls "$WORK/twice/checkpoint")" = "step-$step" ] || fail "checkpoint folders after two signals: $(ls "$WORK/twice/checkpoint")"
start "$WORK/twice" --checkpoint.enable
wait "$pid" || { cat "$WORK/twice.out"; fail "resumed run"; }
same_steps "$WORK/straight" "$WORK/twice" $((step + 1)) 100
echo "signals: ok"
