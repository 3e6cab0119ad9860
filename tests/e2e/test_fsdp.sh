#!/usr/bin/env bash
# FSDP and HSDP against one process: 10 AdamW steps of the debug model (gradient clipping,
# expert-bias updates, warm-up then linear decay) on the same global batch of 4 sequences at
# dp_shard 2 and 4, HSDP 2 × 2, dp_shard 2 with 2 micro-batches of gradient accumulation and
# dp_shard 2 with the reshard policies "always" and "never". Losses, grad norms, final
# parameters and both AdamW moments agree within 1e-5 relative (per tensor, in L2 norm: sums
# in another order change single elements whose gradient is near zero the most); the
# tokens per expert of every step and the final expert biases are identical.
# Memory: every stage rank of every run peaks within 10% of its plan (what --job.dry_run
# prints), and at one sequence of 128 tokens per rank a dp_shard 4 rank peaks at no more than
# half of what one process does.
source "$(dirname "$0")/lib.sh"
COMMON=(--job.config_file "$CONF/debug_model.toml" --training.steps 10 --training.seq_len 32
    --training.global_batch_size 4 --lr_scheduler.warmup_steps 3 --metrics.log_freq 1
    --metrics.peak_tflops 1 --validation.enable false --checkpoint.enable --checkpoint.interval 10
    --checkpoint.last_save_model_only false)



train_stages one 1 --training.local_batch_size 4
train_stages dp2 2 --training.local_batch_size 2
expect_in "$WORK/dp2.out" "layout: FSDP: parameters, gradients and optimizer state sharded over the 2 dp_shard × cp ranks"
train_stages dp4 4 --training.local_batch_size 1
train_stages hsdp 4 --training.local_batch_size 1 --parallelism.data_parallel_replicate_degree 2
expect_in "$WORK/hsdp.out" "(HSDP: replicated over dp_replicate)"
train_stages accum 2 --training.local_batch_size 1
train_stages always 2 --training.local_batch_size 2 --parallelism.fsdp_reshard_after_forward always
train_stages never 2 --training.local_batch_size 2 --parallelism.fsdp_reshard_after_forward never

python3 - "$WORK" one dp2 dp4 hsdp accum always never <<'PY' || fail "a sharded layout disagrees with one process"
import sys
from run_agreement import agreement

TOL = 1e-5
work, ref, layouts = sys.argv[1], sys.argv[2], sys.argv[3:]
for name in layouts:
    loss, norm, state, worst = agreement(work, name, ref)
    print(f"{name}: losses {loss:.1e}, grad norms {norm:.1e}, final state {state:.1e} relative "
          f"(worst {worst}); tokens per expert and expert biases identical")
    assert loss <= TOL and norm <= TOL and state <= TOL, (name, loss, norm, state)
PY
# Memory at one sequence per rank (2 steps each): one process against dp_shard 4.
train_stages mem_one 1 --training.local_batch_size 1 --training.global_batch_size 1 --training.seq_len 128 --training.steps 2
train_stages mem_dp4 4 --training.local_batch_size 1 --training.seq_len 128 --training.steps 2
check_peaks one dp2 dp4 hsdp accum always never mem_one mem_dp4
one_peak=$(peaks mem_one | awk '{ print $1 }')
peaks mem_dp4 | awk -v one="$one_peak" '{ if ($1 > one / 2) bad = 1; if ($1 > worst) worst = $1 }
    END { printf "dp_shard 4: %.2f MiB per rank at most, one process %.2f MiB\n", worst / 2^20, one / 2^20; exit bad }' ||
    fail "a dp_shard 4 rank peaks above half the one-process peak"
echo "fsdp: ok"
