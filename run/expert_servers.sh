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

dsv3_launch_prepare
dsv3_launch_plan "$@"
[ "$expert_launch" = join ] ||
    dsv3_die "parallelism.expert_server_launch is \"$expert_launch\": set it to \"join\" to run expert servers as their own job"
[ "$expert_procs" -gt 0 ] ||
    dsv3_die "parallelism.expert_parallel_degree is 1: this job has no expert servers"

uri=$(dsv3_ompi_server_uri)
dsv3_log "waiting for the rendezvous file $uri (written when ./run/train.sh starts ompi-server)"
deadline=$((SECONDS + init_timeout))
until [ -s "$uri" ]; do
    [ $SECONDS -lt $deadline ] || dsv3_die "no rendezvous file $uri after ${init_timeout} s: start ./run/train.sh first, or set DSV3_OMPI_SERVER_URI"
    sleep 0.2
done

dsv3_launch_environment "$expert_procs"
cmd=("$MPIEXEC" "${launch_flags[@]}" --ompi-server "file:$uri" ${MPIEXEC_FLAGS:-} -n "$expert_procs"
    "$bin/dsv3-expert" --join "$expert_service" --join-timeout "$init_timeout")
dsv3_log "$(printf '%q ' "${cmd[@]}")"
status=0
"${cmd[@]}" || status=$?
dsv3_explain_launcher_status "$status"
exit "$status"
