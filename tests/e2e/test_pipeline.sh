#!/usr/bin/env bash
# Pipeline parallelism against one process: 10 AdamW steps of the debug model (clipping,
# expert-bias updates, warm-up then linear decay) on the same global batch of 4 sequences, with
# the local batch run as 4 pipeline micro-batches of one sequence: pp 2 under 1F1B and GPipe,
# pp 3 (the middle stage has no embedding and no head), pp 2 × dp_shard 2, pp 2 with full
# activation checkpointing, pp 2 with 2 training micro-batches of gradient accumulation, pp 2
# with block-causal masks over short text documents (document ids travel with the
# activations), pp 2 with 2 expert servers per stage (which keep each micro-batch's rows until
# its backward), and Interleaved 1F1B with 2 stages per rank at pp 2, at pp 2 × dp_shard 2, at
# pp 2 with 2 expert servers per pipeline rank (serving both its stages) and at pp 3 (6
# micro-batches of a batch of 6, against one process on that batch; its last stage holds the
# final norm and head only). Losses, grad norms
# and the final parameters and AdamW moments agree within 1e-5 relative; the tokens per expert
# of every step are identical. Every stage rank peaks within 10% of its plan. Checkpoints cross
# layouts: the pp 2, pp 2 × ep 2, interleaved pp 2 and interleaved pp 2 × ep 2 checkpoints resume
# on one process, and
# one process's on pp 3 and on interleaved pp 2, with the uninterrupted run's losses. A validation pass runs through the pipeline with one process's
# loss.
source "$(dirname "$0")/lib.sh"
COMMON=(--job.config_file "$CONF/debug_model.toml" --training.steps 10 --training.seq_len 32
    --training.global_batch_size 4 --lr_scheduler.warmup_steps 3 --metrics.log_freq 1
    --metrics.peak_tflops 1 --validation.enable false --checkpoint.enable --checkpoint.interval 5
    --checkpoint.last_save_model_only false)

PP2=(--parallelism.pipeline_parallel_degree 2)

train_stages one 1 --training.local_batch_size 4
train_stages pp2 2 --training.local_batch_size 4 "${PP2[@]}"
train_stages gpipe 2 --training.local_batch_size 4 "${PP2[@]}" --parallelism.pipeline_parallel_schedule GPipe
train_stages pp3 3 --training.local_batch_size 4 --parallelism.pipeline_parallel_degree 3
train_stages pp2_dp2 4 --training.local_batch_size 2 "${PP2[@]}"
expect_in "$WORK/pp2_dp2.out" "pp 2 × dp_replicate 1 × dp_shard 2"
train_stages pp2_ac 2 --training.local_batch_size 4 "${PP2[@]}" --activation_checkpoint.mode full
train_stages pp2_accum 2 --training.local_batch_size 2 "${PP2[@]}"
EXPERT_SERVERS=4 train_stages pp2_ep2 2 --training.local_batch_size 4 "${PP2[@]}" --parallelism.expert_parallel_degree 2
expect_in "$WORK/pp2_ep2.out" "expert server 3 (stage 1, experts 4–7): 10 steps"
expect_in "$WORK/pp2_ep2.out" "expert servers: 4 received"
INTERLEAVED=(--parallelism.pipeline_parallel_schedule Interleaved1F1B)
train_stages inter2 2 --training.local_batch_size 4 "${PP2[@]}" "${INTERLEAVED[@]}" \
    --parallelism.print_schedule true --profiling.enable_profiling --profiling.profile_freq 10 \
    --profiling.save_traces_folder trace
expect_in "$WORK/inter2.out" "Interleaved1F1B, 4 micro-batches × 1 sequences over 2 ranks with 2 stages each, theoretical bubble 11.1%"
# The Chrome trace of step 10 has the schedule's shape: each rank's forwards and backwards, with
# their micro-batch and stage, in the order of the rank's printed list.
python3 -c 'import sys; from run_agreement import trace_follows_schedule as t; t(sys.argv[1], "inter2")' \
    "$WORK" || fail "the interleaved trace does not follow the schedule"
train_stages inter2_dp2 4 --training.local_batch_size 2 "${PP2[@]}" "${INTERLEAVED[@]}"
EXPERT_SERVERS=4 train_stages inter2_ep2 2 --training.local_batch_size 4 "${PP2[@]}" "${INTERLEAVED[@]}" \
    --parallelism.expert_parallel_degree 2
SIX=(--training.global_batch_size 6 --training.local_batch_size 6)
train_stages one6 1 "${SIX[@]}"
train_stages inter3 3 "${SIX[@]}" --parallelism.pipeline_parallel_degree 3 "${INTERLEAVED[@]}"
# Short documents of a text corpus: the document ids the first stage computes must reach the
# others.
make_text_corpus
train_stages block_one 1 --training.local_batch_size 4 "${TEXT[@]}"
train_stages block_pp2 2 --training.local_batch_size 4 "${PP2[@]}" "${TEXT[@]}"
expect_in "$WORK/pp2.out" "layout: pipeline schedule: 1F1B, 4 micro-batches × 1 sequences over 2 stages, theoretical bubble 20.0%"

python3 - "$WORK" <<'PY' || fail "a pipeline layout disagrees with one process"
import sys
from run_agreement import pipeline_agrees
pairs = [(n, "one") for n in ("pp2", "gpipe", "pp3", "pp2_dp2", "pp2_ac", "pp2_accum", "pp2_ep2",
                              "inter2", "inter2_dp2", "inter2_ep2")]
pipeline_agrees(sys.argv[1], pairs + [("block_pp2", "block_one"), ("inter3", "one6")])
PY
check_peaks pp2 gpipe pp3 pp2_dp2 pp2_ac pp2_accum block_pp2 pp2_ep2 inter2 inter2_dp2 inter2_ep2 inter3

# Checkpoints across layouts: resume at step 5 and train to 10, against the uninterrupted run.
resume() {
    local name=$1 from=$2 nproc=$3
    shift 3
    mkdir -p "$WORK/$name/checkpoint"
    cp -r "$WORK/$from/checkpoint/step-5" "$WORK/$name/checkpoint/"
    train_stages "$name" "$nproc" "$@"
    expect_in "$WORK/$name.out" "resumed from $WORK/$name/checkpoint/step-5"
}
resume from_pp2_on_one pp2 1 --training.local_batch_size 4
resume from_one_on_pp3 one 3 --training.local_batch_size 4 --parallelism.pipeline_parallel_degree 3
resume from_pp2_ep2_on_one pp2_ep2 1 --training.local_batch_size 4
resume from_inter2_on_one inter2 1 --training.local_batch_size 4
resume from_inter2_ep2_on_one inter2_ep2 1 --training.local_batch_size 4
resume from_one_on_inter2 one 2 --training.local_batch_size 4 "${PP2[@]}" "${INTERLEAVED[@]}"
python3 - "$WORK" <<'PY' || fail "a resumed run disagrees with the uninterrupted one"
import json, sys
work = sys.argv[1]
def metrics(name):
    return {r["step"]: r for r in map(json.loads, open(f"{work}/{name}/metrics.jsonl"))}
one = metrics("one")
for name in ("from_pp2_on_one", "from_one_on_pp3", "from_pp2_ep2_on_one", "from_inter2_on_one",
             "from_inter2_ep2_on_one", "from_one_on_inter2"):
    m = metrics(name)
    assert sorted(m) == list(range(6, 11)), (name, sorted(m))
    loss = max(abs(m[s]["loss"] - one[s]["loss"]) / one[s]["loss"] for s in m)
    print(f"{name}: steps 6-10, losses within {loss:.1e} of the uninterrupted run")
    assert loss <= 1e-5, (name, loss)
PY

# Validation through the pipeline: the held-out loss of pp 2 is one process's.
VAL=(--training.steps 2 --validation.enable true --validation.freq 2 --validation.steps 2
    --checkpoint.enable false)
train_stages val_one 1 --training.local_batch_size 4 "${VAL[@]}"
train_stages val_pp2 2 --training.local_batch_size 4 "${PP2[@]}" "${VAL[@]}"
python3 - "$WORK" <<'PY' || fail "the pipeline's validation loss differs"
import json, sys
work = sys.argv[1]
def val(name):
    rows = [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl")]
    return [r["validation_loss"] for r in rows if r.get("validation_loss") is not None]
a, b = val("val_one"), val("val_pp2")
assert a and len(a) == len(b), (a, b)
d = max(abs(x - y) / abs(y) for x, y in zip(b, a))
print(f"validation: pp 2 loss {b[-1]:.6f}, one process {a[-1]:.6f} ({d:.1e} relative)")
assert d <= 1e-5, d
PY
echo "pipeline: ok"
