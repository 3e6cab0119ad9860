#!/usr/bin/env bash
# Tensor and sequence parallelism against one process: 10 AdamW steps of the debug model
# (gradient clipping, expert-bias updates, warm-up then linear decay) on the same global batch
# at tp 2 (heads, the dense FFN's and the shared experts' hidden features, the embedding's and
# the output head's vocabulary split; the residual stream, norms, router and routed experts on
# each rank's half of the tokens; the loss over the split vocabulary), tp 2 with the logits
# gathered before the loss instead (disable_loss_parallel; also both ways with a vocabulary
# that splits unevenly), tp 2 with q_lora
# (wq_a → q_norm → wq_b), tp 2 with YaRN active (seq_len above original_seq_len), tp 2 with
# full and with op-level activation checkpointing (the default run checkpoints every second
# layer), tp 2 × dp_shard 2 (FSDP of each tp rank's pieces), tp 2 × pp 2 and
# tp 2 with 2 expert servers. Losses, grad norms, final parameters and both AdamW moments agree
# within 1e-5 relative; the tokens per expert of every step are identical. A checkpoint saved at
# step 5 under tp 2 resumes on one process, and one saved under one process resumes under tp 2 ×
# dp_shard 2, with the uninterrupted losses. Every stage rank peaks within 10% of its plan, a
# tp 2 rank's plan holds exactly half of every cut tensor and all of the others, and the
# held-out loss of tp 2 and tp 2 × pp 2 is one process's.
source "$(dirname "$0")/lib.sh"
COMMON=(--job.config_file "$CONF/debug_model.toml" --training.steps 10 --training.seq_len 32
    --training.global_batch_size 4 --training.local_batch_size 4 --lr_scheduler.warmup_steps 3
    --metrics.log_freq 1 --metrics.peak_tflops 1 --validation.enable false --checkpoint.enable
    --checkpoint.interval 5 --checkpoint.last_save_model_only false)
TP2=(--parallelism.tensor_parallel_degree 2)
QLORA=(--model.q_lora_rank 32)
YARN=(--model.original_seq_len 16 --model.rope_factor 4)

train_stages one 1
train_stages tp2 2 "${TP2[@]}"
expect_in "$WORK/tp2.out" "tp 2 = 2 stage ranks"
GATHER=(--parallelism.disable_loss_parallel true)
train_stages tp2_gather 2 "${TP2[@]}" "${GATHER[@]}"
ODD_VOCAB=(--model.vocab_size 2001)
train_stages odd_one 1 "${ODD_VOCAB[@]}"
train_stages odd_tp2 2 "${TP2[@]}" "${ODD_VOCAB[@]}"
train_stages odd_tp2_gather 2 "${TP2[@]}" "${ODD_VOCAB[@]}" "${GATHER[@]}"
train_stages qlora_one 1 "${QLORA[@]}"
train_stages qlora_tp2 2 "${TP2[@]}" "${QLORA[@]}"
train_stages yarn_one 1 "${YARN[@]}"
train_stages yarn_tp2 2 "${TP2[@]}" "${YARN[@]}"
train_stages ac_tp2 2 "${TP2[@]}" --activation_checkpoint.mode full
train_stages acop_tp2 2 "${TP2[@]}" --activation_checkpoint.selective_ac_option op
train_stages tp2_dp2 4 "${TP2[@]}" --parallelism.data_parallel_shard_degree 2 --training.local_batch_size 2
train_stages tp2_pp2 4 "${TP2[@]}" --parallelism.pipeline_parallel_degree 2 \
    --parallelism.pipeline_parallel_microbatch_size 2
EXPERT_SERVERS=2 train_stages tp2_ep2 2 "${TP2[@]}" --parallelism.expert_parallel_degree 2

compare() { # compare REF RUN...: losses, grad norms, final state and tokens per expert
    python3 - "$WORK" "$@" <<'PY' || fail "a tensor-parallel run disagrees with one process"
import sys
from run_agreement import agreement

TOL = 1e-5
work, ref, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
for name in runs:
    loss, norm, state, worst = agreement(work, name, ref)
    print(f"{name}: losses {loss:.1e}, grad norms {norm:.1e}, final state {state:.1e} relative "
          f"(worst {worst}) of {ref}; tokens per expert identical")
    assert loss <= TOL and norm <= TOL and state <= TOL, (name, loss, norm, state)
PY
}
compare one tp2 tp2_gather ac_tp2 acop_tp2 tp2_dp2 tp2_pp2 tp2_ep2
compare tp2 tp2_gather
compare odd_one odd_tp2 odd_tp2_gather
compare qlora_one qlora_tp2
compare yarn_one yarn_tp2

# Resharding: the step-5 checkpoint of tp 2 resumed on one process, and one process's under
# tp 2 × dp_shard 2, each to step 10.
resume_from from_tp2 tp2 1
resume_from to_tp2 one 4 "${TP2[@]}" --parallelism.data_parallel_shard_degree 2 --training.local_batch_size 2
python3 -c "import sys; from run_agreement import resumed_losses; resumed_losses(sys.argv[1], ('from_tp2', 'to_tp2'), 'one')" \
    "$WORK" || fail "a resharded resume disagrees with the uninterrupted run"

check_peaks one tp2 tp2_gather qlora_tp2 yarn_tp2 ac_tp2 acop_tp2 tp2_dp2 tp2_pp2 tp2_ep2

# Validation: the held-out loss of tp 2 (and tp 2 × pp 2) is one process's, counted once.
VAL=(--training.steps 2 --validation.enable true --validation.freq 2 --validation.steps 2
    --checkpoint.enable false)
train_stages val_one 1 "${VAL[@]}"
train_stages val_tp2 2 "${TP2[@]}" "${VAL[@]}"
train_stages val_tp2_pp2 4 "${TP2[@]}" "${VAL[@]}" --parallelism.pipeline_parallel_degree 2
python3 -c "import sys; from run_agreement import validation_agrees; validation_agrees(sys.argv[1], ('val_tp2', 'val_tp2_pp2'), 'val_one')" \
    "$WORK" || fail "the tensor-parallel validation loss differs"

# A tp 2 rank holds half of every tensor the plan cuts and all of the others: its planned
# parameter count, against the one-process checkpoint's tensors.
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${COMMON[@]}" "${TP2[@]}" --job.dry_run >"$WORK/plan.out" 2>&1 ||
    { cat "$WORK/plan.out"; fail "the tp 2 dry run failed"; }
python3 - "$WORK" <<'PY' || fail "a tp 2 rank does not hold what the plan cuts"
import re, sys
from ckpt_tensors import checkpoint_tensors
work = sys.argv[1]
cut = re.compile(r"(tok_embeddings|output|attention\.(wq|wq_b|wkv_b|wo)|"
                 r"(feed_forward|moe\.shared_experts)\.w[123])\.weight$")
total = halves = 0
for name, t in checkpoint_tensors(f"{work}/one/checkpoint/step-10").items():
    if not name.startswith("model:") or name.endswith("expert_bias"):  # a buffer, not a parameter
        continue
    total += t.size
    if cut.search(name):
        halves += t.size // 2
planned = [int(n.replace(",", "")) for n in re.findall(r"; ([0-9,]+) params:", open(f"{work}/plan.out").read())]
print(f"tp 2: {planned} parameters per rank, {total} in all, {halves} of them in cut tensors' halves")
assert planned == [total - halves] * 2, (planned, total, halves)
PY
echo "tensor parallel: ok"
