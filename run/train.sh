#!/usr/bin/env bash
# Trains with dsv3: installs what is missing, builds, works out the process layout from the
# config and NPROC, and launches one MPMD job:
#
#   mpiexec -n 1 dsv3-coordinator ARGS : -n S dsv3-stage : -n E dsv3-expert
#
#   CONFIG_FILE=conf/x.toml NPROC=4 ./run/train.sh [--section.key value ...]
#
# CONFIG_FILE  job config (default conf/debug_model.toml)
# NPROC        stage processes (default: what the config's degrees need, with
#              data_parallel_shard_degree -1 counting as 1); the coordinator and expert
#              servers come on top
# MPIEXEC      the launcher (default mpiexec); MPIEXEC_FLAGS are added to its command line
# With --job.dry_run only the coordinator runs: it prints every rank's share of a job of NPROC
# stage processes (any size) and exits. DRY_RUN_LAUNCH=1 launches every process instead, which
# also checks the launch and builds every communicator, then stops before training. With parallelism.expert_server_launch = "join" the
# expert servers are not started here: start them with ./run/expert_servers.sh (same config).
set -euo pipefail
source "$(dirname "$0")/common.sh"

CONFIG_FILE=${CONFIG_FILE:-$DSV3_ROOT/conf/debug_model.toml}
nproc_args=()
[ -z "${NPROC:-}" ] || nproc_args=(--nproc "$NPROC")
MPIEXEC=${MPIEXEC:-mpiexec}
[ -f "$CONFIG_FILE" ] || dsv3_die "CONFIG_FILE '$CONFIG_FILE' does not exist"

dsv3_ensure_packages "${DSV3_RUN_PACKAGES[@]}"
dsv3_ensure_build "$DSV3_BUILD_DIR" -Dcuda=auto
dsv3_mpi_env
bin=$DSV3_BUILD_DIR/roles
config_args=(--job.config_file "$CONFIG_FILE" "$@")

dry_run=0
for a in "$@"; do
    case $a in --job.dry_run | --job.dry_run=true) dry_run=1 ;; esac
done
if [ $dry_run -eq 1 ] && [ "${DRY_RUN_LAUNCH:-0}" != 1 ]; then
    exec "$MPIEXEC" -n 1 ${MPIEXEC_FLAGS:-} "$bin/dsv3-coordinator" "${nproc_args[@]}" "${config_args[@]}"
fi

# The layout, as the coordinator computes it from the config (one source of truth).
plan=$("$MPIEXEC" -n 1 ${MPIEXEC_FLAGS:-} "$bin/dsv3-coordinator" --print-launch "${nproc_args[@]}" \
    "${config_args[@]}") || exit 1
stage_procs=$(sed -n 's/^stage_procs=//p' <<<"$plan")
expert_procs=$(sed -n 's/^expert_procs=//p' <<<"$plan")
expert_launch=$(sed -n 's/^expert_launch=//p' <<<"$plan")
[ -n "$stage_procs" ] && [ -n "$expert_procs" ] || dsv3_die "could not work out the layout: $plan"

# Equal BLAS/OpenMP thread shares so that ranks never oversubscribe the cores.
compute_ranks=$stage_procs
if [ "$expert_launch" = mpmd ]; then compute_ranks=$((stage_procs + expert_procs)); fi
cores=$(nproc)
threads=$((cores / compute_ranks))
[ $threads -ge 1 ] || threads=1
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
# Idle OpenMP threads must sleep, not spin: OpenBLAS's own threads need those cores.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# Ranks always see a terminal under mpiexec: plain step lines when this script's output is not one.
[ -t 1 ] || export NO_COLOR=${NO_COLOR:-1}

flags=()
# OpenMPI binds each rank to one core by default, which would leave a rank's BLAS threads
# sharing that core; unbind unless the user chose a mapping.
case " ${MPIEXEC_FLAGS:-} " in *" --bind-to "* | *" --map-by "*) ;; *) flags+=(--bind-to none) ;; esac
total=$((1 + compute_ranks))
if [ -z "${SLURM_JOB_ID:-}" ] && [ $total -gt "$cores" ]; then flags+=(--oversubscribe); fi

cmd=("$MPIEXEC" "${flags[@]}")
if [ "$expert_launch" = join ]; then
    uri=${DSV3_OMPI_SERVER_URI:-${TMPDIR:-/tmp}/dsv3-$(id -u)-ompi-server.uri}
    if ! [ -s "$uri" ]; then
        dsv3_log "starting ompi-server (rendezvous file $uri)"
        ompi-server --no-daemonize -r "$uri" &
        server_pid=$!
        trap 'kill $server_pid 2>/dev/null; rm -f "$uri"' EXIT
        for _ in $(seq 50); do [ -s "$uri" ] && break; sleep 0.1; done
    fi
    cmd+=(--ompi-server "file:$uri")
fi
cmd+=(${MPIEXEC_FLAGS:-} -n 1 "$bin/dsv3-coordinator" "${config_args[@]}" : -n "$stage_procs" "$bin/dsv3-stage")
if [ "$expert_launch" = mpmd ] && [ "$expert_procs" -gt 0 ]; then
    cmd+=(: -n "$expert_procs" "$bin/dsv3-expert")
fi
dsv3_log "$(printf '%q ' "${cmd[@]}")"
"${cmd[@]}"
