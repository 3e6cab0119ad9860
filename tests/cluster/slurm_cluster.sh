# A Slurm cluster on this machine for the cluster tests: its own munge key and munged,
# slurmctld and slurmd with a generated slurm.conf, everything on 127.0.0.1 and in one folder.
# Sourced by the tests (after tests/e2e/lib.sh); needs root and Debian's slurmd, slurmctld,
# slurm-client and munge (run/test.sh installs them). Defines:
#   slurm_start DIR [two]  starts the cluster in DIR (exports SLURM_CONF) or exits 77 saying
#                     why: one node, "localhost"; with `two`, nodes n1 and n2, two slurmd posing
#                     as two hosts (Slurm places the components of a heterogeneous job on
#                     different nodes). Slurm's PMIx plugin takes the spool folder to be the
#                     host's own, so each slurmd runs in its own mount namespace with its own
#                     folder mounted there; `unshare` (util-linux) does it
#   slurm_stop        cancels every job and stops the daemons (also on exit)
#   slurm_wait JOB    waits until JOB has left the queue (fails after 300 s, printing the ends
#                     of the job's log and of the daemons' logs)
#   slurm_state JOB   Slurm's state of JOB (of its first component) and its restart count:
#                     "COMPLETED restarts 0 "
#   slurm_preempted NAME REF   job $job, logging into $WORK/NAME, gets SIGUSR1 once 20 steps
#                     are logged (scancel --signal=USR1 --batch, what --signal=B:USR1@120 sends
#                     before the time limit); it must save, requeue itself once, resume from its
#                     checkpoint and log run REF's steps 1-300 bit for bit

slurm_skip() { echo "the Slurm cluster cannot be started here: $*; skipped"; exit 77; }

slurm_start() {
    SLURM_DIR=$1
    local nodes=${2:-one}
    [ "$(id -u)" -eq 0 ] || slurm_skip "not root (slurmd runs jobs as any user only as root)"
    local tool
    for tool in munged mungekey slurmctld slurmd sbatch squeue scontrol scancel; do
        command -v "$tool" >/dev/null 2>&1 || slurm_skip "$tool is not installed (Debian: slurmd slurmctld slurm-client munge)"
    done
    mkdir -p "$SLURM_DIR"/{state,spool,log}
    mungekey -c -k "$SLURM_DIR/munge.key" >/dev/null 2>&1 || slurm_skip "mungekey failed"
    chmod 600 "$SLURM_DIR/munge.key"
    munged --force --key-file="$SLURM_DIR/munge.key" --socket="$SLURM_DIR/munge.sock" \
        --pid-file="$SLURM_DIR/munged.pid" --log-file="$SLURM_DIR/log/munged.log" \
        --seed-file="$SLURM_DIR/munge.seed" || slurm_skip "munged did not start ($(tail -1 "$SLURM_DIR/log/munged.log" 2>/dev/null))"
    local ports
    read -r -a ports <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')"
    # Eight CPUs whatever the machine has: the tests place up to 7 single-threaded tasks.
    cat >"$SLURM_DIR/slurm.conf" <<CONF
ClusterName=dsv3test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SLURM_DIR/munge.sock,cred_expire=10
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd-%n.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
SlurmdParameters=config_overrides
CONF
    local names=(localhost)
    if [ "$nodes" = two ]; then
        names=(n1 n2)
        cat >>"$SLURM_DIR/slurm.conf" <<CONF
NodeName=n1 NodeAddr=127.0.0.1 Port=${ports[1]} CPUs=8 RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 Port=${ports[2]} CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
        # PMIx's per-step folders, under the spool folder: per node as well.
        echo "PMIxCliTmpDirBase=$SLURM_DIR/spool" >"$SLURM_DIR/mpi.conf"
    else
        cat >>"$SLURM_DIR/slurm.conf" <<CONF
NodeName=localhost NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
    fi
    export SLURM_CONF=$SLURM_DIR/slurm.conf
    trap 'slurm_stop; rm -rf "$WORK"' EXIT
    slurmctld -f "$SLURM_CONF" || slurm_skip "slurmctld did not start ($(tail -1 "$SLURM_DIR/log/slurmctld.log" 2>/dev/null))"
    local n
    for n in "${names[@]}"; do
        if [ "$nodes" = two ]; then
            command -v unshare >/dev/null 2>&1 || slurm_skip "unshare is not installed (Debian: util-linux)"
            mkdir -p "$SLURM_DIR/spool-$n"
            unshare --mount --propagation private sh -c \
                "mount --bind '$SLURM_DIR/spool-$n' '$SLURM_DIR/spool' && exec slurmd -f '$SLURM_CONF' -N $n" ||
                slurm_skip "slurmd $n did not start in its own mount namespace ($(tail -1 "$SLURM_DIR/log/slurmd-$n.log" 2>/dev/null))"
        else
            slurmd -f "$SLURM_CONF" -N "$n" || slurm_skip "slurmd did not start ($(tail -1 "$SLURM_DIR/log/slurmd-$n.log" 2>/dev/null))"
        fi
    done
    for _ in $(seq 100); do
        [ "$(sinfo -h -o %T 2>/dev/null | sort -u)" = idle ] && return 0
        sleep 0.2
    done
    slurm_skip "the nodes did not come up: $(sinfo 2>&1 | tail -1); $(tail -2 "$SLURM_DIR"/log/slurmd-*.log)"
}

slurm_stop() {
    [ -n "${SLURM_DIR:-}" ] || return 0
    scancel --user root >/dev/null 2>&1 || true
    local pid
    for pid in "$SLURM_DIR"/slurmd-*.pid "$SLURM_DIR/slurmctld.pid" "$SLURM_DIR/munged.pid"; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    sleep 0.5
    SLURM_DIR=
}

slurm_wait() {
    for _ in $(seq 1500); do
        [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
        sleep 0.2
    done
    local state out
    state=$(squeue -j "$1" 2>&1)
    out=$(scontrol show job "$1" 2>/dev/null | sed -n 's/^ *StdOut=//p' | head -1)
    [ -z "$out" ] || [ ! -f "$out" ] || { echo "--- the last lines of $out:"; tail -40 "$out"; } >&2
    local log
    for log in "$SLURM_DIR"/log/slurm*.log; do
        echo "--- the last lines of $(basename "$log"):"
        tail -25 "$log"
    done >&2
    scancel "$1" 2>/dev/null || true
    fail "job $1 still in the queue after 300 s: $state"
}

slurm_state() {
    scontrol show job "$1" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p; s/.*Restarts=\([0-9]*\).*/restarts \1/p' |
        head -2 | tr '\n' ' '
}

slurm_preempted() {
    local name=$1 ref=$2
    for _ in $(seq 900); do
        [ -f "$WORK/$name/metrics.jsonl" ] && [ "$(wc -l <"$WORK/$name/metrics.jsonl")" -ge 20 ] && break
        sleep 0.1
    done
    scancel --signal=USR1 --batch "$job"
    slurm_wait "$job"
    [ "$(slurm_state "$job")" = "COMPLETED restarts 1 " ] ||
        { cat "$WORK/$name.out"; fail "job $job: $(slurm_state "$job")"; }
    expect_count "$WORK/$name.out" "stopping on SIGUSR1 after step" 1
    expect_in "$WORK/$name.out" "requeueing job $job to resume"
    expect_in "$WORK/$name.out" "checkpoint: resumed from $WORK/$name/checkpoint/step-"
    same_steps "$WORK/$ref" "$WORK/$name" 1 300
}
