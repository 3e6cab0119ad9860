#!/usr/bin/env bash
# run/slurm/train_het.sbatch on a real Slurm (two nodes started here, tests/cluster/
# slurm_cluster.sh): one heterogeneous job runs the coordinator and 2 stage ranks on node n1 and
# 2 expert servers on node n2, and trains bit for bit as the same MPMD job launched by
# mpiexec outside Slurm; sent SIGUSR1 (scancel --signal=USR1 --batch, what --signal=B:USR1@120
# sends before the time limit) it saves, requeues itself as a whole and resumes, again bit for
# bit; a component sized against the config is refused, naming both numbers.
source "$DSV3_SOURCE_ROOT/tests/e2e/lib.sh"
source "$(dirname "$0")/slurm_cluster.sh"
slurm_start "$WORK/slurm" two
cd "$DSV3_SOURCE_ROOT"
export BUILD_DIR=$DSV3_BUILD_ROOT
# The two nodes are one host: Open MPI's shared-memory transport would take peers of the other
# "node" for its own and fail, so the ranks talk over TCP on the loopback (a real cluster needs
# nothing of the kind).
export OMPI_MCA_btl=self,tcp
SMALL=("${SMALL_MODEL[@]}" --metrics.log_freq 1 --lr_scheduler.warmup_steps 3
    --training.steps 300 --checkpoint.interval 1000 --parallelism.expert_parallel_degree 2)

# The reference: the same job as ./run/train.sh launches it, outside Slurm.
COMMON=(--job.config_file conf/debug_model.toml "${SMALL[@]}" --checkpoint.enable true)
EXPERT_SERVERS=2 train_stages mpmd 2

# submit NAME [component sizes...]: sets job; the log is $WORK/NAME.out.
submit() {
    local name=$1
    shift
    job=$(sbatch --parsable --output "$WORK/$name.out" "$@" run/slurm/train_het.sbatch "${SMALL[@]}" \
        --job.dump_folder "$WORK/$name") || fail "sbatch $name"
}

# 1. Coordinator and stage ranks on one node, expert servers on the other.
submit het --ntasks 3 : --ntasks 2
slurm_wait "$job"
[ "$(slurm_state "$job")" = "COMPLETED restarts 0 " ] || { cat "$WORK/het.out"; fail "job $job: $(slurm_state "$job")"; }
expect_in "$WORK/het.out" "coordinator and stage ranks on n1, expert servers on n2"
expect_in "$WORK/het.out" "3 + 2 tasks: 1 coordinator, 2 stage ranks, 2 expert servers"
expect_in "$WORK/het.out" "expert server 1 (stage 0, experts 2–3): 300 steps"
same_steps "$WORK/mpmd" "$WORK/het" 1 300

# 2. Preempted once 20 steps are logged: it saves, requeues both components, and resumes.
submit preempted --ntasks 3 : --ntasks 2
slurm_preempted preempted mpmd

# 3. Three expert-server tasks for a config with two: refused before anything starts.
submit wrong --ntasks 3 : --ntasks 3
slurm_wait "$job"
expect_in "$WORK/wrong.out" "component 1 has 3 tasks, but the config has 2 expert servers: submit it with --ntasks 2"
# Slurm 22.05's srun hangs after a few het steps in a hundred: how often the watch of
# dsv3_srun_het (run/common.sh) ended one here.
ended=$(cat "$WORK"/het.out "$WORK"/preempted.out | grep -c "srun is still running 30 s after its step" || true)
echo "slurm hetjob: ok ($ended of 3 sruns outlived their step and were ended by the watch)"
