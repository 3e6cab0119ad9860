#!/usr/bin/env bash
# The Slurm scripts on a real Slurm (a one-node cluster started here, tests/cluster/
# slurm_cluster.sh): run/slurm/train.sbatch trains a small model on 2 stage ranks and 2 expert
# servers; a job sent SIGUSR1 (what --signal=B:USR1@120 sends before the time limit; here
# scancel --signal=USR1 --batch) saves, requeues itself and resumes, and every step's loss, grad
# norm and LR equal the uninterrupted job's bit for bit; run/slurm/expert_servers.sbatch joins
# a training job through the ompi-server rendezvous, and the two jobs train bit for bit as the
# one MPMD job did.
source "$DSV3_SOURCE_ROOT/tests/e2e/lib.sh"
source "$(dirname "$0")/slurm_cluster.sh"
slurm_start "$WORK/slurm"
cd "$DSV3_SOURCE_ROOT"
export BUILD_DIR=$DSV3_BUILD_ROOT
SMALL=("${SMALL_MODEL[@]}" --metrics.log_freq 1 --lr_scheduler.warmup_steps 3
    --training.steps 300 --checkpoint.interval 1000 --parallelism.expert_parallel_degree 2)

# submit NAME [sbatch options...] -- [overrides...]: sets job; the log is $WORK/NAME.out.
submit() {
    local name=$1
    shift
    local opts=()
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    job=$(sbatch --parsable --output "$WORK/$name.out" "${opts[@]}" run/slurm/train.sbatch "${SMALL[@]}" \
        --job.dump_folder "$WORK/$name" "$@") || fail "sbatch $name"
}

# 1. A whole job: 1 coordinator + 2 stage ranks + 2 expert servers.
submit straight --ntasks 5 --
slurm_wait "$job"
[ "$(slurm_state "$job")" = "COMPLETED restarts 0 " ] || { cat "$WORK/straight.out"; fail "job $job: $(slurm_state "$job")"; }
expect_in "$WORK/straight.out" "dp_shard 2 × cp 1 × tp 1 = 2 stage ranks; ep 2 → 2 expert servers (mpmd)"
expect_in "$WORK/straight.out" "step   300  loss"
expect_in "$WORK/straight.out" "expert server 0 (stage 0, experts 0–1): 300 steps"

# 2. Preempted: SIGUSR1 to the batch script once 20 steps are logged; it saves, requeues, resumes.
submit preempted --ntasks 5 --
slurm_preempted preempted straight

# 3. Expert servers as their own job, joining a training job: the same training as job 1.
export DSV3_OMPI_SERVER_URI=$WORK/ompi-server.uri
join=(--parallelism.expert_server_launch join --comm.init_timeout_seconds 120)
submit trainer --ntasks 3 -- "${join[@]}"
trainer=$job
experts=$(sbatch --parsable --ntasks 2 --output "$WORK/experts.out" run/slurm/expert_servers.sbatch \
    "${SMALL[@]}" "${join[@]}") || fail "sbatch expert_servers.sbatch"
slurm_wait "$trainer"
slurm_wait "$experts"
[ "$(slurm_state "$trainer")" = "COMPLETED restarts 0 " ] || { cat "$WORK/trainer.out"; fail "training job: $(slurm_state "$trainer")"; }
[ "$(slurm_state "$experts")" = "COMPLETED restarts 0 " ] || { cat "$WORK/experts.out"; fail "expert job: $(slurm_state "$experts")"; }
expect_in "$WORK/trainer.out" "dp_shard 2 × cp 1 × tp 1 = 2 stage ranks; ep 2 → 2 expert servers (join)"
expect_in "$WORK/experts.out" "joining the training job through service 'dsv3-experts'"
expect_in "$WORK/experts.out" "expert server 0 (stage 0, experts 0–1): 300 steps"
same_steps "$WORK/straight" "$WORK/trainer" 1 300
echo "slurm: ok"
