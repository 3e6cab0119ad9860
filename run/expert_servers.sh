#!/usr/bin/env bash
# Starts the expert servers of a training job as their own mpiexec job; they join the training
# job through an MPI port published with ompi-server (parallelism.expert_server_launch = "join").
#
#   CONFIG_FILE=conf/x.toml NPROC=4 ./run/expert_servers.sh [--section.key value ...]
#
# Use the same CONFIG_FILE, NPROC and overrides as ./run/train.sh. Both scripts find ompi-server
# through DSV3_OMPI_SERVER_URI (default: a file in TMPDIR that ./run/train.sh writes); the
# servers wait up to comm.init_timeout_seconds for the training job.
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

plan=$("$MPIEXEC" -n 1 ${MPIEXEC_FLAGS:-} "$bin/dsv3-coordinator" --print-launch "${nproc_args[@]}" \
    --job.config_file "$CONFIG_FILE" "$@") || exit 1
expert_procs=$(sed -n 's/^expert_procs=//p' <<<"$plan")
expert_launch=$(sed -n 's/^expert_launch=//p' <<<"$plan")
service=$(sed -n 's/^expert_service=//p' <<<"$plan")
timeout=$(sed -n 's/^init_timeout=//p' <<<"$plan")
[ "$expert_launch" = join ] ||
    dsv3_die "parallelism.expert_server_launch is \"$expert_launch\": set it to \"join\" to run expert servers as their own job"
[ "$expert_procs" -gt 0 ] ||
    dsv3_die "parallelism.expert_parallel_degree is 1: this job has no expert servers"

uri=${DSV3_OMPI_SERVER_URI:-${TMPDIR:-/tmp}/dsv3-$(id -u)-ompi-server.uri}
dsv3_log "waiting for the rendezvous file $uri (written when ./run/train.sh starts ompi-server)"
deadline=$((SECONDS + timeout))
until [ -s "$uri" ]; do
    [ $SECONDS -lt $deadline ] || dsv3_die "no rendezvous file $uri after ${timeout} s: start ./run/train.sh first, or set DSV3_OMPI_SERVER_URI"
    sleep 0.2
done

cores=$(nproc)
threads=$((cores / expert_procs))
[ $threads -ge 1 ] || threads=1
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} # idle OpenMP threads leave cores to BLAS
flags=()
case " ${MPIEXEC_FLAGS:-} " in *" --bind-to "* | *" --map-by "*) ;; *) flags+=(--bind-to none) ;; esac
if [ -z "${SLURM_JOB_ID:-}" ] && [ "$expert_procs" -gt "$cores" ]; then flags+=(--oversubscribe); fi
cmd=("$MPIEXEC" "${flags[@]}" --ompi-server "file:$uri" ${MPIEXEC_FLAGS:-} -n "$expert_procs"
    "$bin/dsv3-expert" --join "$service" --join-timeout "$timeout")
dsv3_log "$(printf '%q ' "${cmd[@]}")"
"${cmd[@]}"
