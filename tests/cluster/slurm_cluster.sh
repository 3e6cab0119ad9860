# A one-node Slurm cluster on this machine for the cluster tests: its own munge key and munged,
# slurmctld and slurmd with a generated slurm.conf, everything on 127.0.0.1 and in one folder.
# Sourced by the tests (after tests/e2e/lib.sh); needs root and Debian's slurmd, slurmctld,
# slurm-client and munge (run/test.sh installs them). Defines:
#   slurm_start DIR   starts the cluster in DIR (exports SLURM_CONF) or exits 77 saying why
#   slurm_stop        cancels every job and stops the daemons (also on exit)
#   slurm_wait JOB    waits until JOB has left the queue (fails after 300 s)

slurm_skip() { echo "the Slurm cluster cannot be started here: $*; skipped"; exit 77; }

slurm_start() {
    SLURM_DIR=$1
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
s = [socket.socket() for _ in range(2)]
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
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
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
NodeName=localhost NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF=$SLURM_DIR/slurm.conf
    trap 'slurm_stop; rm -rf "$WORK"' EXIT
    slurmctld -f "$SLURM_CONF" || slurm_skip "slurmctld did not start ($(tail -1 "$SLURM_DIR/log/slurmctld.log" 2>/dev/null))"
    slurmd -f "$SLURM_CONF" -N localhost || slurm_skip "slurmd did not start ($(tail -1 "$SLURM_DIR/log/slurmd.log" 2>/dev/null))"
    for _ in $(seq 100); do
        [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && return 0
        sleep 0.2
    done
    slurm_skip "the node did not come up: $(sinfo 2>&1 | tail -1); $(tail -2 "$SLURM_DIR/log/slurmd.log")"
}

slurm_stop() {
    [ -n "${SLURM_DIR:-}" ] || return 0
    scancel --user root >/dev/null 2>&1 || true
    local d
    for d in slurmd slurmctld munged; do
        [ -f "$SLURM_DIR/$d.pid" ] && kill "$(cat "$SLURM_DIR/$d.pid")" 2>/dev/null || true
    done
    sleep 0.5
    SLURM_DIR=
}

slurm_wait() {
    for _ in $(seq 1500); do
        [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
        sleep 0.2
    done
    fail "job $1 still in the queue after 300 s: $(squeue -j "$1" 2>&1)"
}
