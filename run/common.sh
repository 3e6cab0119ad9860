# Shared by the run/ scripts: system packages, the Python test environment, the build.
# Sourced, not executed. Every function prints what it does and fails with a clear message.

DSV3_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DSV3_BUILD_DIR=${BUILD_DIR:-$DSV3_ROOT/build}
DSV3_VENV=${DSV3_VENV:-$DSV3_ROOT/.venv}

# Debian/Ubuntu packages to build and run dsv3.
DSV3_RUN_PACKAGES=(gcc g++ make pkg-config meson ninja-build openmpi-bin libopenmpi-dev
    libhdf5-openmpi-dev libopenblas-dev libpcre2-dev libjson-c-dev zlib1g-dev)
# ... to plot a run's metrics (run/plot.sh) ...
DSV3_PLOT_PACKAGES=(python3 python3-matplotlib)
# ... and to test it: CMocka, the PyTorch reference (Debian's CPU torch), a venv for PyPI
# packages, clang and its runtime for the libFuzzer harnesses, matplotlib for run/plot.sh,
# clang-format for the formatting check, Slurm and munge for the cluster tests' one-node cluster.
DSV3_TEST_PACKAGES=(libcmocka-dev python3 python3-venv python3-numpy python3-torch clang
    libclang-rt-dev python3-matplotlib clang-format slurmd slurmctld slurm-client munge)

# The compilers and build tools among DSV3_RUN_PACKAGES, by the command each installs: a machine
# using a dependency bundle may have them from elsewhere (pip's meson and ninja).
declare -gA DSV3_TOOL_COMMANDS=([gcc]=gcc [g++]=g++ [make]=make [meson]=meson [ninja-build]=ninja)

dsv3_log() { printf '[dsv3] %s\n' "$*"; }
dsv3_die() { printf '[dsv3] error: %s\n' "$*" >&2; exit 1; }

# ---- a dependency bundle (run/pack_deps.sh) for machines without package access ----

# With DSV3_DEPS_PREFIX naming the folder where run/pack_deps.sh's tarball was unpacked: the
# build's pkg-config lookups, the compiler, the linker, Open MPI and every program find what
# the bundle holds, and its packages count as installed (DSV3_BUNDLED_PACKAGES).
dsv3_use_deps_prefix() {
    local prefix manifest arch libdir
    prefix=$(cd "$DSV3_DEPS_PREFIX" 2>/dev/null && pwd) ||
        dsv3_die "DSV3_DEPS_PREFIX=$DSV3_DEPS_PREFIX is not a folder"
    manifest=$prefix/dsv3-deps.txt
    [ -f "$manifest" ] ||
        dsv3_die "DSV3_DEPS_PREFIX=$prefix has no dsv3-deps.txt: unpack run/pack_deps.sh's tarball there"
    arch=$(sed -n 's/^multiarch //p' "$manifest")
    mapfile -t DSV3_BUNDLED_PACKAGES < <(sed -n 's/^package \([^ ]*\) .*/\1/p' "$manifest")
    # A script started by one that used the bundle has its environment already.
    [ "${PKG_CONFIG_SYSROOT_DIR:-}" != "$prefix" ] || return 0
    while read -r libdir; do
        LD_LIBRARY_PATH=$prefix/$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    done < <(sed -n 's/^libdir //p' "$manifest" | tac)
    export LD_LIBRARY_PATH PATH=$prefix/usr/bin:$PATH
    # pkg-config reads the bundle's .pc files alone and puts the prefix before every -I and -L
    # path they name (PKG_CONFIG_PATH is dropped: the prefix would be put before its paths too).
    export PKG_CONFIG_SYSROOT_DIR=$prefix
    export PKG_CONFIG_LIBDIR=$prefix/usr/lib/$arch/pkgconfig:$prefix/usr/lib/pkgconfig:$prefix/usr/share/pkgconfig
    unset PKG_CONFIG_PATH
    # Open MPI finds its plugins, help files and wrapper data (mpicc) under OPAL_PREFIX, and
    # Debian's MCA defaults (no UCX, OFI or openib) in OPAL_SYSCONFDIR.
    export OPAL_PREFIX=$prefix/usr OPAL_SYSCONFDIR=$prefix/etc/openmpi
    # PMIx, Open MPI's launcher's runtime, finds its plugins and help files where these say
    # (Debian's PMIx keeps them outside its prefix, so PMIX_PREFIX would not move them).
    export PMIX_PKGLIBDIR=$prefix/usr/lib/$arch/pmix2/lib/pmix PMIX_PKGDATADIR=$prefix/usr/lib/$arch/pmix2/share/pmix
}

# Whether a package is there: installed, or with a dependency bundle, held by it or (a compiler
# or build tool) its command found.
dsv3_package_present() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' && return 0
    [ -n "${DSV3_DEPS_PREFIX:-}" ] || return 1
    case " ${DSV3_BUNDLED_PACKAGES[*]} " in *" $1 "*) return 0 ;; esac
    [ -n "${DSV3_TOOL_COMMANDS[$1]:-}" ] && command -v "${DSV3_TOOL_COMMANDS[$1]}" >/dev/null 2>&1
}

[ -z "${DSV3_DEPS_PREFIX:-}" ] || dsv3_use_deps_prefix

# Installs the missing packages of the given lists with apt-get (as root or through sudo).
dsv3_ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dsv3_package_present "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        dsv3_die "these packages are missing and this machine has no apt-get: ${missing[*]}
Install their equivalents (OpenMPI with mpicc/mpiexec, parallel HDF5, OpenBLAS, PCRE2, json-c, zlib,
CMocka, meson >= 1.0, ninja, Python 3 with torch and venv, clang with libFuzzer) and run again."
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || dsv3_die "need root or sudo to install: ${missing[*]}"
        sudo=(sudo)
    fi
    dsv3_log "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The Python environment of the tests: Debian's python3 (which sees Debian's torch) in a venv
# with --system-site-packages, plus the PyPI packages of tests/requirements.txt.
dsv3_ensure_venv() {
    local py=/usr/bin/python3 req=$DSV3_ROOT/tests/requirements.txt stamp=$DSV3_VENV/.requirements
    if [ ! -x "$DSV3_VENV/bin/python" ]; then
        dsv3_log "creating the test venv in $DSV3_VENV"
        "$py" -m venv --system-site-packages "$DSV3_VENV"
    fi
    if [ -f "$req" ] && ! cmp -s "$req" "$stamp"; then
        if grep -qv '^\s*\(#\|$\)' "$req"; then
            dsv3_log "installing the PyPI packages of tests/requirements.txt"
            "$DSV3_VENV/bin/python" -m pip install -q -r "$req"
        fi
        cp "$req" "$stamp"
    fi
    "$DSV3_VENV/bin/python" -c 'import torch' 2>/dev/null ||
        dsv3_die "the test venv cannot import torch: install python3-torch and remove $DSV3_VENV"
}

# Configures (once) and builds a build directory: dsv3_ensure_build DIR [meson options...]
dsv3_ensure_build() {
    local dir=$1
    shift
    if [ ! -f "$dir/build.ninja" ]; then
        dsv3_log "configuring $dir"
        meson setup "$dir" "$DSV3_ROOT" "$@" >"$dir.setup.log" 2>&1 ||
            { cat "$dir.setup.log" >&2; dsv3_die "meson setup failed (log above)"; }
        rm -f "$dir.setup.log"
    fi
    dsv3_log "building $dir"
    ninja -C "$dir" >/dev/null || { ninja -C "$dir" >&2; dsv3_die "build failed (errors above)"; }
}

# Environment for OpenMPI: root is allowed (containers, CI) when running as root.
# OpenBLAS's idle worker threads spin (sched_yield) for 2^28 cycles after each parallel GEMM by
# default, taking the cores the OpenMP regions between GEMMs need: with 2 threads the debug
# model's step runs 1.29x faster when they sleep after 2^4 (OpenBLAS reads this when it loads,
# so it must be in the environment of the process). Not set when the caller chose a value.
dsv3_blas_environment() {
    export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
}

dsv3_mpi_env() {
    if [ "$(id -u)" -eq 0 ]; then
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
}

# ---- launching a job (run/train.sh, run/expert_servers.sh) ----

# Config file, NPROC, launcher, packages, build and MPI environment of a launch. Sets
# CONFIG_FILE, MPIEXEC, nproc_args and bin. With DSV3_PREBUILT=1 (batch jobs on compute nodes)
# nothing is installed or built: the build must exist.
dsv3_launch_prepare() {
    CONFIG_FILE=${CONFIG_FILE:-$DSV3_ROOT/conf/debug_model.toml}
    nproc_args=()
    [ -z "${NPROC:-}" ] || nproc_args=(--nproc "$NPROC")
    MPIEXEC=${MPIEXEC:-mpiexec}
    [ -f "$CONFIG_FILE" ] || dsv3_die "CONFIG_FILE '$CONFIG_FILE' does not exist"
    bin=$DSV3_BUILD_DIR/roles
    if [ "${DSV3_PREBUILT:-0}" = 1 ]; then
        [ -x "$bin/dsv3-coordinator" ] && [ -x "$bin/dsv3-stage" ] && [ -x "$bin/dsv3-expert" ] ||
            dsv3_die "no dsv3 build in $DSV3_BUILD_DIR: build it before submitting (./run/train.sh --job.dry_run builds)"
    else
        dsv3_ensure_packages "${DSV3_RUN_PACKAGES[@]}"
        dsv3_ensure_build "$DSV3_BUILD_DIR" -Dcuda=auto
    fi
    dsv3_mpi_env
}

# A batch job of TASKS tasks with THREADS cores each (run/slurm/, run/pbs/): the stage processes
# are what the coordinator and the expert servers of an MPMD layout leave; exports NPROC (unless
# set), each rank's BLAS and OpenMP threads (unless set), DSV3_PREBUILT (compute nodes install
# and build nothing) and DSV3_OMPI_SERVER_URI (default: a file in the submission folder, which
# a joining expert-server job can read). dsv3_batch_layout TASKS THREADS [overrides...]
dsv3_batch_layout() {
    local tasks=$1 threads=$2 experts=0
    shift 2
    export DSV3_PREBUILT=1 DSV3_OMPI_SERVER_URI=${DSV3_OMPI_SERVER_URI:-$DSV3_ROOT/dsv3-ompi-server.uri}
    dsv3_launch_prepare
    dsv3_launch_plan "$@"
    if [ "$expert_launch" = mpmd ]; then experts=$expert_procs; fi
    export NPROC=${NPROC:-$((tasks - 1 - experts))}
    [ "$NPROC" -ge 1 ] || dsv3_die "$tasks tasks leave no stage rank (1 coordinator + $experts expert servers)"
    export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads} OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
    dsv3_log "$tasks tasks: 1 coordinator, $NPROC stage ranks, $experts expert servers; $threads thread(s) each"
}

# Runs a command in the background and waits for it, passing signals on: SIGTERM, SIGUSR1 and a
# first SIGINT reach it as SIGUSR1 (a dsv3 job saves the state after the current step and exits
# 0; mpiexec itself would kill its ranks a second after a SIGTERM), a second SIGINT (Ctrl-C
# twice) as SIGTERM, which stops a job at once. Sets dsv3_status to its exit status and
# dsv3_signal to the first signal received (empty: none). With dsv3_watch naming a function,
# `$dsv3_watch PID` runs beside the command (PID: the command's) until it ends.
dsv3_run_forwarding_signals() {
    "$@" &
    dsv3_child=$!
    dsv3_signal=
    local watch=
    if [ -n "${dsv3_watch:-}" ]; then
        "$dsv3_watch" "$dsv3_child" &
        watch=$!
    fi
    trap 'dsv3_forward TERM USR1' TERM
    trap 'dsv3_forward USR1 USR1' USR1
    trap 'if [ "$dsv3_signal" = INT ]; then dsv3_forward INT TERM; else dsv3_forward INT USR1; fi' INT
    while :; do
        dsv3_status=0
        wait "$dsv3_child" || dsv3_status=$?
        # A trapped signal interrupts wait with a status above 128 while the command runs on.
        if [ $dsv3_status -gt 128 ] && kill -0 "$dsv3_child" 2>/dev/null; then continue; fi
        break
    done
    trap - TERM USR1 INT
    if [ -n "$watch" ]; then
        kill "$watch" 2>/dev/null || true
        wait "$watch" 2>/dev/null || true
    fi
}

# One srun over the components of a heterogeneous job (run/slurm/train_het.sbatch), run as
# dsv3_run_forwarding_signals runs a command. Slurm 22.05's srun (Debian 12's) can hang after
# such a step has ended: its PMIx plugin starts an abort agent per component, keeps one thread
# id, and may then wait for an agent nobody stopped (later releases count the components). So
# a watch ends srun once the step has been out of the queue for 30 s; srun has then reported
# every failed task ("srun: error: ..."), which says whether the step failed (status 1).
# dsv3_srun_het SRUN_ARGS...
dsv3_srun_het() {
    local srun_report # srun's stderr; the watch (dsv3_end_stuck_srun) marks an ending beside it
    srun_report=$(mktemp)
    dsv3_watch=dsv3_end_stuck_srun dsv3_run_forwarding_signals srun "$@" 2> >(tee "$srun_report" >&2)
    if [ -f "$srun_report.ended" ]; then
        dsv3_status=0
        if grep -q '^srun: error: ' "$srun_report"; then dsv3_status=1; fi
    fi
    rm -f "$srun_report" "$srun_report.ended"
}
dsv3_end_stuck_srun() { # dsv3_end_stuck_srun SRUN_PID
    local gone=0 steps
    while sleep 5 && kill -0 "$1" 2>/dev/null; do
        # The job's steps but the batch script's own; a failed query counts as a step.
        steps=$(squeue -h -s -j "$SLURM_JOB_ID" -o %i 2>/dev/null) || steps=unknown
        if [ -n "$(grep -v -e '\.batch$' -e '\.extern$' <<<"$steps")" ]; then
            gone=0
        elif [ $((gone += 5)) -ge 30 ]; then
            dsv3_log "srun is still running 30 s after its step left the queue (Slurm 22.05's hang after a heterogeneous step): ending it"
            touch "$srun_report.ended"
            kill -KILL "$1"
            return 0
        fi
    done
}
# Says so when mpiexec itself ended on a signal nobody sent it (Open MPI's launcher can crash
# when a connected job, such as a joined expert-server job, is lost): its ranks then end on
# their own deadlines (comm.init_timeout_seconds, comm.train_timeout_seconds), and what they
# printed after the crash is lost. dsv3_explain_launcher_status STATUS [SIGNAL_FORWARDED]
dsv3_explain_launcher_status() {
    local status=$1 forwarded=${2:-}
    [ "$status" -gt 128 ] && [ "$status" -lt 160 ] && [ -z "$forwarded" ] || return 0
    dsv3_log "error: mpiexec itself ended on SIG$(kill -l $((status - 128))) (exit status $status): Open MPI's launcher failed, so the job's later output is lost; its ranks stop on their own within comm.init_timeout_seconds / comm.train_timeout_seconds. Look above for the first error, and at the log of any job joined to this one (expert servers)" >&2
}
dsv3_forward() { # dsv3_forward RECEIVED SENT
    [ -n "$dsv3_signal" ] || dsv3_signal=$1
    kill -s "$2" "$dsv3_child" 2>/dev/null || true
}

# The layout as the coordinator works it out from the config and overrides ("$@"): one source
# of truth. Sets stage_procs, expert_procs, expert_launch, expert_service, init_timeout and
# dry_run. With -h or --help among the arguments it prints the coordinator's help and exits.
dsv3_launch_plan() {
    local plan a
    for a in "$@"; do
        case $a in -h | --help) exec "$MPIEXEC" -n 1 ${MPIEXEC_FLAGS:-} "$bin/dsv3-coordinator" --help ;; esac
    done
    plan=$("$MPIEXEC" -n 1 ${MPIEXEC_FLAGS:-} "$bin/dsv3-coordinator" --print-launch "${nproc_args[@]}" \
        --job.config_file "$CONFIG_FILE" "$@") || exit 1
    stage_procs=$(sed -n 's/^stage_procs=//p' <<<"$plan")
    expert_procs=$(sed -n 's/^expert_procs=//p' <<<"$plan")
    expert_launch=$(sed -n 's/^expert_launch=//p' <<<"$plan")
    expert_service=$(sed -n 's/^expert_service=//p' <<<"$plan")
    init_timeout=$(sed -n 's/^init_timeout=//p' <<<"$plan")
    dry_run=$(sed -n 's/^dry_run=//p' <<<"$plan")
    [ -n "$stage_procs" ] && [ -n "$expert_procs" ] || dsv3_die "could not work out the layout: $plan"
}

# Environment and mpiexec flags for `ranks` computing ranks on this node: an equal share of the
# cores each for BLAS and OpenMP (unless set), idle OpenMP threads asleep (OpenBLAS's threads
# need those cores), ranks unbound (OpenMPI binds each to one core unless the user chose a
# mapping), oversubscription allowed on this machine (not under Slurm or with a hostfile). Sets
# launch_flags.
dsv3_launch_environment() {
    local ranks=$1 cores threads
    cores=$(nproc)
    threads=$((cores / ranks))
    [ $threads -ge 1 ] || threads=1
    export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
    export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
    dsv3_blas_environment
    # Ranks always see a terminal under mpiexec: plain step lines when our output is not one.
    [ -t 1 ] || export NO_COLOR=${NO_COLOR:-1}
    launch_flags=()
    case " ${MPIEXEC_FLAGS:-} " in *" --bind-to "* | *" --map-by "*) ;; *) launch_flags+=(--bind-to none) ;; esac
    case " ${MPIEXEC_FLAGS:-} " in *" --hostfile "* | *" --host "* | *" --machinefile "*) return 0 ;; esac
    if [ -z "${SLURM_JOB_ID:-}" ] && [ $((ranks + 1)) -gt "$cores" ]; then launch_flags+=(--oversubscribe); fi
}

# Where run/train.sh's ompi-server writes its address for joining expert servers.
dsv3_ompi_server_uri() { echo "${DSV3_OMPI_SERVER_URI:-${TMPDIR:-/tmp}/dsv3-$(id -u)-ompi-server.uri}"; }
