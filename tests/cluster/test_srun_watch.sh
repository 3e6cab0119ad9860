#!/usr/bin/env bash
# dsv3_srun_het (run/common.sh), which run/slurm/train_het.sbatch launches its step with: an
# srun still running 30 s after its step left the queue (Slurm 22.05's srun can hang so after a
# heterogeneous step) is ended, with status 0 unless srun reported a failed task; an srun whose
# step is still listed is left alone, and srun's own status passes through. A stand-in srun and
# squeue play Slurm here (the real hang comes at random, a few runs in a hundred).
source "$DSV3_SOURCE_ROOT/tests/e2e/lib.sh"
source "$DSV3_SOURCE_ROOT/run/common.sh"
mkdir -p "$WORK/bin"
# srun MESSAGE SECONDS STATUS: says MESSAGE on stderr, runs SECONDS and ends with STATUS; or
# hangs when STATUS is "hang".
cat >"$WORK/bin/srun" <<'SH'
#!/bin/sh
[ -z "$1" ] || echo "$1" >&2
[ "$3" != hang ] || exec sleep "$2"
sleep "$2"
exit "$3"
SH
# squeue: the job's batch step, and step 7.0 while STEP_LISTED is set.
cat >"$WORK/bin/squeue" <<'SH'
#!/bin/sh
echo 7.batch
[ -z "${STEP_LISTED:-}" ] || echo 7.0
SH
chmod +x "$WORK/bin/srun" "$WORK/bin/squeue"
export PATH=$WORK/bin:$PATH SLURM_JOB_ID=7

# case_start NAME LISTED SRUN_ARGS...: runs dsv3_srun_het in the background, with step 7.0
# listed if LISTED is 1; $WORK/NAME.status gets its status and seconds, $WORK/NAME.out its output.
case_start() {
    local name=$1 listed=$2
    shift 2
    (
        [ "$listed" = 0 ] || export STEP_LISTED=1
        start=$SECONDS
        dsv3_srun_het "$@" >"$WORK/$name.out" 2>&1
        echo "$dsv3_status $((SECONDS - start))" >"$WORK/$name.status"
    ) &
}
case_start hung 0 "" 100 hang
case_start hung_failed 0 "srun: error: n2: task 3: Exited with exit code 2" 100 hang
case_start running 1 "" 40 0
case_start failed 0 "srun: error: n1: task 0: Exited with exit code 5" 1 5
wait

check() { # check NAME STATUS MIN_SECONDS MAX_SECONDS ENDED(yes|no)
    local status seconds
    read -r status seconds <"$WORK/$1.status"
    [ "$status" = "$2" ] || { cat "$WORK/$1.out"; fail "$1: status $status, expected $2"; }
    [ "$seconds" -ge "$3" ] && [ "$seconds" -le "$4" ] || fail "$1: took $seconds s, expected $3-$4"
    if [ "$5" = yes ]; then
        expect_in "$WORK/$1.out" "srun is still running 30 s after its step left the queue"
    else
        ! grep -q "still running" "$WORK/$1.out" || { cat "$WORK/$1.out"; fail "$1: srun was ended"; }
    fi
}
check hung 0 30 45 yes
check hung_failed 1 30 45 yes
check running 0 40 45 no
check failed 5 0 5 no
echo "srun watch: ok"
