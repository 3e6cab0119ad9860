#!/usr/bin/env bash
# The v schedules against one process: 10 AdamW steps of the debug model (clipping, expert-bias
# updates) on a global batch of 4 sequences run as 4 pipeline micro-batches of one sequence.
# Each rank holds two stages in a v (rank r: stages r and 2·pp − 1 − r); backwards run whole (B)
# or as I (input gradients, sent on at once) and W (weight gradients, where the schedule has
# room). ZBVZeroBubble: pp 2 (the lists printed, and the Chrome trace in their order), pp 3 (6
# stages, 6 micro-batches of a batch of 6), pp 2 × tp 2, pp 2 with 2 expert servers per pipeline
# rank, pp 2 with full activation checkpointing, pp 2 × dp_shard 2 (FSDP, resharding after
# forward by default and always), pp 2 with block-causal masks. DualPipeV (B and
# I/W mixed, forward-backward pairs): pp 2 and pp 3 (6 micro-batches), pp 2 with 2 expert
# servers, where each pair runs overlapped as two turns that hand over at the expert exchanges
# (the trace in the list's order), and that with dp_shard 2 (two FSDP stores' collectives
# interleaved, in the same order on both ranks; 8 sequences against one process's 8). Losses,
# grad norms and the final parameters and AdamW moments agree within 1e-5
# relative; every stage rank peaks within 10% of its plan. Checkpoints cross layouts (ZBV pp 2 →
# one process, one process → ZBV pp 3, DualPipeV pp 2 → one process), validation runs through
# the v.
source "$(dirname "$0")/lib.sh"
COMMON=(--job.config_file "$CONF/debug_model.toml" --training.steps 10 --training.seq_len 32
    --training.global_batch_size 4 --lr_scheduler.warmup_steps 3 --metrics.log_freq 1
    --metrics.peak_tflops 1 --validation.enable false --checkpoint.enable --checkpoint.interval 5
    --checkpoint.last_save_model_only false)
ZBV=(--parallelism.pipeline_parallel_schedule ZBVZeroBubble)
PP2=(--parallelism.pipeline_parallel_degree 2 "${ZBV[@]}")

train_stages one 1 --training.local_batch_size 4
train_stages zbv2 2 --training.local_batch_size 4 "${PP2[@]}" --parallelism.print_schedule true \
    --profiling.enable_profiling --profiling.profile_freq 10 --profiling.save_traces_folder trace
expect_in "$WORK/zbv2.out" "ZBVZeroBubble, 4 micro-batches × 1 sequences over 2 ranks with 2 stages each, theoretical bubble 4.0%"
expect_in "$WORK/zbv2.out" "layout: pipeline schedule: rank 0: F0.0 SF0.0 F1.0 SF1.0 RF0.3 F2.0"
# The Chrome trace of step 10 has the schedule's shape: each rank's F, I and W with their
# micro-batch and stage, in the order of the rank's printed list.
python3 -c 'import sys; from run_agreement import trace_follows_schedule as t; t(sys.argv[1], "zbv2")' \
    "$WORK" || fail "the ZBV trace does not follow the schedule"
SIX=(--training.global_batch_size 6 --training.local_batch_size 6)
train_stages one6 1 "${SIX[@]}"
train_stages zbv3 3 "${SIX[@]}" --parallelism.pipeline_parallel_degree 3 "${ZBV[@]}"
train_stages zbv2_tp2 4 --training.local_batch_size 4 "${PP2[@]}" --parallelism.tensor_parallel_degree 2
EXPERT_SERVERS=4 train_stages zbv2_ep2 2 --training.local_batch_size 4 "${PP2[@]}" \
    --parallelism.expert_parallel_degree 2
train_stages zbv2_ac 2 --training.local_batch_size 4 "${PP2[@]}" --activation_checkpoint.mode full
# FSDP keeps each layer group's gradients from its I to its W (one more buffer per layer).
train_stages zbv2_dp2 4 --training.local_batch_size 2 "${PP2[@]}"
expect_in "$WORK/zbv2_dp2.out" "pp 2 × dp_replicate 1 × dp_shard 2"
train_stages zbv2_dp2_always 4 --training.local_batch_size 2 "${PP2[@]}" \
    --parallelism.fsdp_reshard_after_forward always
DUAL=(--parallelism.pipeline_parallel_schedule DualPipeV)
train_stages dual2 2 --training.local_batch_size 4 --parallelism.pipeline_parallel_degree 2 \
    "${DUAL[@]}" --parallelism.print_schedule true
expect_in "$WORK/dual2.out" "layout: pipeline schedule: rank 1: RF0.1 RF0.2 F0.1 SF0.1 RF1.1 F0.2 SF0.2 RF1.2 F1.1 SF1.1 RF2.1 F1.2 SF1.2 RB0.2 F2.1 SF2.1 RF2.2 B0.2"
train_stages dual3 3 "${SIX[@]}" --parallelism.pipeline_parallel_degree 3 "${DUAL[@]}"
expect_in "$WORK/dual2.out" "each pair (an F and the B after it) runs in turn"
EXPERT_SERVERS=4 train_stages dual2_ep2 2 --training.local_batch_size 4 \
    --parallelism.pipeline_parallel_degree 2 "${DUAL[@]}" --parallelism.expert_parallel_degree 2 \
    --parallelism.print_schedule true --profiling.enable_profiling --profiling.profile_freq 10 \
    --profiling.save_traces_folder trace
expect_in "$WORK/dual2_ep2.out" "theoretical bubble 7.7%"
expect_in "$WORK/dual2_ep2.out" "each pair (PF and the B after it) overlaps"
expect_in "$WORK/dual2_ep2.out" "layout: pipeline schedule: rank 1: RF0.1 RF0.2 F0.1 SF0.1 RF1.1 F0.2 SF0.2 RF1.2 F1.1 SF1.1 RF2.1 F1.2 SF1.2 RB0.2 F2.1 SF2.1 RF2.2 RB0.1 B0.2 SB0.2 RF3.1 RB1.2 PF2.2 B0.1"
python3 -c 'import sys; from run_agreement import trace_follows_schedule as t; t(sys.argv[1], "dual2_ep2")' \
    "$WORK" || fail "the DualPipeV trace does not follow the schedule"
EIGHT=(--training.global_batch_size 8)
train_stages one8 1 "${EIGHT[@]}" --training.local_batch_size 8
EXPERT_SERVERS=4 train_stages dual2_dp2_ep2 4 "${EIGHT[@]}" --training.local_batch_size 4 \
    --parallelism.pipeline_parallel_degree 2 "${DUAL[@]}" --parallelism.expert_parallel_degree 2
make_text_corpus
train_stages block_one 1 --training.local_batch_size 4 "${TEXT[@]}"
train_stages block_zbv2 2 --training.local_batch_size 4 "${PP2[@]}" "${TEXT[@]}"

python3 - "$WORK" <<'PY' || fail "a v layout disagrees with one process"
import sys
from run_agreement import pipeline_agrees
pairs = [(n, "one") for n in ("zbv2", "zbv2_tp2", "zbv2_ep2", "zbv2_ac", "zbv2_dp2",
                              "zbv2_dp2_always", "dual2", "dual2_ep2")]
pipeline_agrees(sys.argv[1], pairs + [("zbv3", "one6"), ("dual3", "one6"),
                                      ("dual2_dp2_ep2", "one8"), ("block_zbv2", "block_one")])
PY
check_peaks zbv2 zbv3 zbv2_tp2 zbv2_ep2 zbv2_ac zbv2_dp2 zbv2_dp2_always block_zbv2 dual2 dual3 \
    dual2_ep2 dual2_dp2_ep2

# Checkpoints across layouts: resume at step 5 and train to 10, against the uninterrupted run.
resume_from from_zbv2_on_one zbv2 1 --training.local_batch_size 4
resume_from from_one_on_zbv3 one 3 --training.local_batch_size 4 \
    --parallelism.pipeline_parallel_degree 3 "${ZBV[@]}"
resume_from from_dual2_on_one dual2 1 --training.local_batch_size 4
python3 - "$WORK" <<'PY' || fail "a resumed run disagrees with the uninterrupted one"
import sys
from run_agreement import resumed_losses
resumed_losses(sys.argv[1], ("from_zbv2_on_one", "from_one_on_zbv3", "from_dual2_on_one"), "one")
PY

# Validation through the v: the held-out loss of pp 2 is one process's.
VAL=(--training.steps 2 --validation.enable true --validation.freq 2 --validation.steps 2
    --checkpoint.enable false)
train_stages val_one 1 --training.local_batch_size 4 "${VAL[@]}"
train_stages val_zbv2 2 --training.local_batch_size 4 "${PP2[@]}" "${VAL[@]}"
python3 - "$WORK" <<'PY' || fail "the v's validation loss differs"
import sys
from run_agreement import validation_agrees
validation_agrees(sys.argv[1], ("val_zbv2",), "val_one")
PY
echo "pipeline_v: ok"
