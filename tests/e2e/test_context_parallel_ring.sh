#!/usr/bin/env bash
# Context parallelism's ring rotation (parallelism.context_parallel_rotate_method = "alltoall")
# against one process: each rank's keys and values pass around the cp ring, one shard per step;
# the queries attend to each shard at their places among its keys, the partial attentions merge,
# and in backward each shard's key and value gradients travel with it back to its rank. 10 AdamW
# steps of the debug model at cp 2, cp 4, cp 2 × tp 2, cp 2 with full activation checkpointing
# (the ring runs again in the recomputation) and cp 2 with block-causal masks over short text
# documents: losses, grad norms, final parameters and both AdamW moments within 1e-5 relative,
# tokens per expert identical; every stage rank peaks within 10% of its plan. (The all-gather
# rotation and the other layouts: test_context_parallel.sh.)
source "$(dirname "$0")/lib.sh"
COMMON=(--job.config_file "$CONF/debug_model.toml" --training.steps 10 --training.seq_len 32
    --training.global_batch_size 4 --training.local_batch_size 4 --lr_scheduler.warmup_steps 3
    --metrics.log_freq 1 --metrics.peak_tflops 1 --validation.enable false --checkpoint.enable
    --checkpoint.interval 10 --checkpoint.last_save_model_only false)
RING2=(--parallelism.context_parallel_degree 2 --parallelism.context_parallel_rotate_method alltoall)

train_stages one 1
train_stages ring2 2 "${RING2[@]}"
train_stages ring4 4 --parallelism.context_parallel_degree 4 \
    --parallelism.context_parallel_rotate_method alltoall
train_stages ring2_tp2 4 "${RING2[@]}" --parallelism.tensor_parallel_degree 2
train_stages ring2_ac 2 "${RING2[@]}" --activation_checkpoint.mode full
make_text_corpus
train_stages doc_one 1 "${TEXT[@]}"
train_stages doc_ring2 2 "${RING2[@]}" "${TEXT[@]}"

python3 - "$WORK" <<'PY' || fail "a ring context-parallel run disagrees with one process"
import sys
from run_agreement import agreement

TOL = 1e-5
work = sys.argv[1]
pairs = [(n, "one") for n in ("ring2", "ring4", "ring2_tp2", "ring2_ac")] + [("doc_ring2", "doc_one")]
for name, ref in pairs:
    loss, norm, state, worst = agreement(work, name, ref)
    print(f"{name}: losses {loss:.1e}, grad norms {norm:.1e}, final state {state:.1e} relative "
          f"(worst {worst}) of {ref}; tokens per expert identical")
    assert loss <= TOL and norm <= TOL and state <= TOL, (name, loss, norm, state)
PY
check_peaks ring2 ring4 ring2_tp2 ring2_ac doc_ring2
echo "context parallel ring: ok"
