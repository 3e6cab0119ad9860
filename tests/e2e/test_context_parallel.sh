#!/usr/bin/env bash
# Context parallelism against one process: 10 AdamW steps of the debug model (clipping,
# expert-bias updates, warm-up then linear decay) on the same global batch at cp 2 (each rank
# holds chunks r and 3 − r of every sequence cut into 4; keys and values all-gathered after
# RoPE, their gradients reduce-scattered), cp 2 with full activation checkpointing (the
# gathers run again in the recomputation), cp 2 × tp 2, cp 2 × dp_shard 2 (FSDP over the four
# ranks), cp 2 × pp 2, cp 2 with 2 expert servers, cp 2 with q_lora and YaRN active, and cp 2
# with block-causal masks over short text documents (document ids of the whole sequences on
# every rank). Losses, grad norms, final parameters and both AdamW moments agree within 1e-5
# relative; the tokens per expert of every step are identical. A checkpoint saved at step 5
# under cp 2 resumes on one process, and one saved by one process resumes under cp 2 × tp 2,
# with the uninterrupted losses. Every stage rank peaks within 10% of its plan, and the
# held-out loss of cp 2 is one process's.
source "$(dirname "$0")/lib.sh"
COMMON=(--job.config_file "$CONF/debug_model.toml" --training.steps 10 --training.seq_len 32
    --training.global_batch_size 4 --training.local_batch_size 4 --lr_scheduler.warmup_steps 3
    --metrics.log_freq 1 --metrics.peak_tflops 1 --validation.enable false --checkpoint.enable
    --checkpoint.interval 5 --checkpoint.last_save_model_only false)
CP2=(--parallelism.context_parallel_degree 2)
TP2=(--parallelism.tensor_parallel_degree 2)
QLORA_YARN=(--model.q_lora_rank 32 --model.original_seq_len 16 --model.rope_factor 4)

train_stages one 1
train_stages cp2 2 "${CP2[@]}"
expect_in "$WORK/cp2.out" "cp 2 × tp 1 = 2 stage ranks"
train_stages cp2_ac 2 "${CP2[@]}" --activation_checkpoint.mode full
train_stages cp2_tp2 4 "${CP2[@]}" "${TP2[@]}"
train_stages cp2_dp2 4 "${CP2[@]}" --parallelism.data_parallel_shard_degree 2 --training.local_batch_size 2
train_stages cp2_pp2 4 "${CP2[@]}" --parallelism.pipeline_parallel_degree 2
EXPERT_SERVERS=2 train_stages cp2_ep2 2 "${CP2[@]}" --parallelism.expert_parallel_degree 2
train_stages qy_one 1 "${QLORA_YARN[@]}"
train_stages qy_cp2 2 "${CP2[@]}" "${QLORA_YARN[@]}"

# Short documents of a text corpus: a document often spans two ranks' chunks.
make_text_corpus
train_stages doc_one 1 "${TEXT[@]}"
train_stages doc_cp2 2 "${CP2[@]}" "${TEXT[@]}"
train_stages doc_cp2_tp2 4 "${CP2[@]}" "${TP2[@]}" "${TEXT[@]}"

python3 - "$WORK" <<'PY' || fail "a context-parallel run disagrees with one process"
import sys
from run_agreement import agreement

TOL = 1e-5
work = sys.argv[1]
pairs = [(n, "one") for n in ("cp2", "cp2_ac", "cp2_tp2", "cp2_dp2", "cp2_pp2", "cp2_ep2")]
pairs += [("qy_cp2", "qy_one"), ("doc_cp2", "doc_one"), ("doc_cp2_tp2", "doc_one")]
for name, ref in pairs:
    loss, norm, state, worst = agreement(work, name, ref)
    print(f"{name}: losses {loss:.1e}, grad norms {norm:.1e}, final state {state:.1e} relative "
          f"(worst {worst}) of {ref}; tokens per expert identical")
    assert loss <= TOL and norm <= TOL and state <= TOL, (name, loss, norm, state)
PY

# Resharding: the step-5 checkpoint of cp 2 resumed on one process, and one process's under
# cp 2 × tp 2, each to step 10.
resume_from from_cp2 cp2 1
resume_from to_cp2 one 4 "${CP2[@]}" "${TP2[@]}"
python3 -c "import sys; from run_agreement import resumed_losses; resumed_losses(sys.argv[1], ('from_cp2', 'to_cp2'), 'one')" \
    "$WORK" || fail "a resharded resume disagrees with the uninterrupted run"

check_peaks one cp2 cp2_ac cp2_tp2 cp2_dp2 cp2_pp2 cp2_ep2 qy_cp2 doc_cp2 doc_cp2_tp2

# Validation: the held-out loss of cp 2 is one process's (each rank's share counted once).
VAL=(--training.steps 2 --validation.enable true --validation.freq 2 --validation.steps 2
    --checkpoint.enable false)
train_stages val_one 1 "${VAL[@]}"
train_stages val_cp2 2 "${CP2[@]}" "${VAL[@]}"
python3 -c "import sys; from run_agreement import validation_agrees; validation_agrees(sys.argv[1], ('val_cp2',), 'val_one')" \
    "$WORK" || fail "the context-parallel validation loss differs"
echo "context parallel: ok"
