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
# also checks the launch and builds every communicator, then stops before training. With
# parallelism.expert_server_launch = "join" the expert servers are not started here: start
# them with ./run/expert_servers.sh (same config). --help lists every config key.
set -euo pipefail
source "$(dirname "$0")/common.sh"

dsv3_launch_prepare
config_args=(--job.config_file "$CONFIG_FILE" "$@")

dsv3_launch_plan "$@"
if [ "$dry_run" = 1 ] && [ "${DRY_RUN_LAUNCH:-0}" != 1 ]; then
    exec "$MPIEXEC" -n 1 ${MPIEXEC_FLAGS:-} "$bin/dsv3-coordinator" "${nproc_args[@]}" "${config_args[@]}"
fi
compute_ranks=$stage_procs
if [ "$expert_launch" = mpmd ]; then compute_ranks=$((stage_procs + expert_procs)); fi
dsv3_launch_environment "$compute_ranks"

cmd=("$MPIEXEC" "${launch_flags[@]}")
if [ "$expert_launch" = join ]; then
    uri=$(dsv3_ompi_server_uri)
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
# Signals reach the job (mpiexec forwards SIGUSR1 to every rank: the job saves and stops), and
# no process outlives this script.
dsv3_run_forwarding_signals "${cmd[@]}"
dsv3_explain_launcher_status "$dsv3_status" "$dsv3_signal"
exit "$dsv3_status"
