#!/usr/bin/env bash
# Expert servers against one process: 10 AdamW steps of the debug model (8 experts, gradient
# clipping, expert-bias updates, warm-up then decay) on the same global batch of 4 sequences,
# with the routed experts on 2 and on 4 expert servers, on 2 servers behind dp_shard 2 stage
# ranks, with 2 micro-batches of gradient accumulation, and with full activation
# checkpointing. Losses, grad norms, final parameters and both AdamW moments agree within 1e-5
# relative (per tensor, in L2 norm); tokens per expert and final expert biases are identical.
# Checkpoints across layouts: step 5 of the ep 2 run resumes with ep 4 and with the experts
# back on the stage rank (ep 1), and step 5 of the one-process run resumes with ep 2; each
# goes on with the one-process losses. The ep 2 checkpoint converts to the one-process HF files,
# and an HF folder loads into an ep 2 job.
# Memory: the stage rank of an expert-server job holds no routed-expert memory (its peak is
# within 10% of its plan, which leaves them out, and below the one-process peak by at least
# the experts' parameters and AdamW state); each server reports what it owns.
# A stop signal to one expert server saves and stops the job, which then resumes exactly.
# bf16 GEMMs run on the expert servers too, with the one-process bf16 losses.
# A num_experts that ep does not divide is refused at start-up, naming both.
source "$(dirname "$0")/lib.sh"
COMMON=(--job.config_file "$CONF/debug_model.toml" --training.steps 10 --training.seq_len 32
    --training.global_batch_size 4 --lr_scheduler.warmup_steps 3 --metrics.log_freq 1
    --metrics.peak_tflops 1 --validation.enable false --checkpoint.enable --checkpoint.interval 5
    --checkpoint.last_save_model_only false)

# train NAME NPROC EP [overrides...]: a run into $WORK/NAME with NPROC stage ranks and, for
# EP > 1, EP expert servers (MPMD).
train() {
    local name=$1 nproc=$2 ep=$3
    shift 3
    local servers=()
    [ "$ep" -eq 1 ] || servers=(: -n "$ep" "$BIN/dsv3-expert")
    "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${COMMON[@]}" --job.dump_folder "$WORK/$name" \
        --parallelism.expert_parallel_degree "$ep" "$@" : -n "$nproc" "$BIN/dsv3-stage" "${servers[@]}" \
        >"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out"; fail "$name failed"; }
    expect_count "$WORK/$name.out" "memory: peak " "$nproc"
}

# resume NAME FROM NPROC EP [overrides...]: FROM's step-5 copied into a new run that goes on to 10.
resume() {
    local name=$1 from=$2
    shift 2
    mkdir -p "$WORK/$name/checkpoint"
    cp -r "$WORK/$from/checkpoint/step-5" "$WORK/$name/checkpoint/"
    train "$name" "$@"
    expect_in "$WORK/$name.out" "resumed from $WORK/$name/checkpoint/step-5"
}

train one 1 1 --training.local_batch_size 4
train ep2 1 2 --training.local_batch_size 4
expect_in "$WORK/ep2.out" "ep 2 → 2 expert servers (mpmd)"
expect_in "$WORK/ep2.out" "expert server 0 (stage 0, experts 0–3): 10 steps"
train ep4 1 4 --training.local_batch_size 4
train ep2_dp2 2 2 --training.local_batch_size 2
train ep2_accum 1 2 --training.local_batch_size 2
train ep2_ac 1 2 --training.local_batch_size 4 --activation_checkpoint.mode full
resume ep2_to_ep4 ep2 1 4 --training.local_batch_size 4
resume ep2_to_one ep2 1 1 --training.local_batch_size 4
resume one_to_ep2 one 1 2 --training.local_batch_size 4

python3 - "$WORK" <<'PY' || fail "an expert-server layout disagrees with one process"
import json, sys
from ckpt_tensors import checkpoint_tensors, state_difference

TOL = 1e-5
work = sys.argv[1]

def metrics(name):
    return {r["step"]: r for r in map(json.loads, open(f"{work}/{name}/metrics.jsonl"))}

def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)

def state_error(name, step):
    return state_difference(checkpoint_tensors(f"{work}/{name}/checkpoint/step-{step}"),
                            checkpoint_tensors(f"{work}/one/checkpoint/step-{step}"))

one = metrics("one")
assert sorted(one) == list(range(1, 11)), sorted(one)
runs = {"ep2": 1, "ep4": 1, "ep2_dp2": 1, "ep2_accum": 1, "ep2_ac": 1,
        "ep2_to_ep4": 6, "ep2_to_one": 6, "one_to_ep2": 6}
for name, first in runs.items():
    m = metrics(name)
    assert sorted(m) == list(range(first, 11)), (name, sorted(m))
    loss = max(rel(m[s]["loss"], one[s]["loss"]) for s in m)
    norm = max(rel(m[s]["grad_norm"], one[s]["grad_norm"]) for s in m)
    for s in m:
        load = {k: v for k, v in m[s].items() if k.endswith("_tokens")}
        assert load and load == {k: v for k, v in one[s].items() if k.endswith("_tokens")}, (name, s)
    state, worst = state_error(name, 10)
    print(f"{name}: steps {first}-10: losses {loss:.1e}, grad norms {norm:.1e}, final state "
          f"{state:.1e} relative (worst {worst}); tokens per expert and expert biases identical")
    assert loss <= TOL and norm <= TOL and state <= TOL, (name, loss, norm, state)
PY

# HF conversion: the ep 2 checkpoint converts to the very files of the one-process one, and an
# HF folder loads straight into an ep 2 job (servers read their experts from it) with the
# one-process job's first steps.
to_hf=$DSV3_SOURCE_ROOT/run/convert_to_hf.sh
for name in one ep2; do
    BUILD_DIR=$DSV3_BUILD_ROOT "$to_hf" "$WORK/$name/checkpoint/step-10" "$WORK/hf_$name" >"$WORK/hf_$name.out" 2>&1 ||
        { cat "$WORK/hf_$name.out"; fail "convert_to_hf of $name"; }
done
diff -r "$WORK/hf_one" "$WORK/hf_ep2" || fail "the ep 2 checkpoint converts to other HF files than one process's"
FROM_HF=(--training.local_batch_size 4 --training.steps 3 --checkpoint.enable false
    --checkpoint.initial_load_path "$WORK/hf_one" --checkpoint.initial_load_in_hf)
train from_hf_one 1 1 "${FROM_HF[@]}"
train from_hf_ep2 1 2 "${FROM_HF[@]}"
expect_in "$WORK/from_hf_ep2.out" "loaded the model from $WORK/hf_one (HF safetensors)"
same_steps "$WORK/from_hf_one" "$WORK/from_hf_ep2" 1 3

# bf16 GEMMs (training.mixed_precision_param) reach the expert servers too: ep 2 in bf16 gives
# the one-process bf16 losses, which differ from the fp32 ones (on CPUs with AVX512-BF16).
if grep -qw avx512_bf16 /proc/cpuinfo; then
    FOUR=(--training.local_batch_size 4 --training.steps 4 --checkpoint.enable false)
    train bf16_one 1 1 "${FOUR[@]}" --training.mixed_precision_param bfloat16
    train bf16_ep2 1 2 "${FOUR[@]}" --training.mixed_precision_param bfloat16
    close_losses "$WORK/bf16_one" "$WORK/bf16_ep2" 1e-5
    train fp32_one 1 1 "${FOUR[@]}"
    close_losses "$WORK/fp32_one" "$WORK/bf16_one" 2e-2 0
fi

# peak NAME: the stage rank's measured and planned peak bytes, "measured planned".
peak() { sed -n 's/.*memory: peak \([0-9]*\) bytes .*planned \([0-9]*\) bytes.*/\1 \2/p' "$WORK/$1.out" | head -1; }
# 8 experts × 5 MoE layers × 3 × 256 × 256 weights × 4 fp32 copies (value, gradient, 2 moments).
experts_bytes=$((8 * 5 * 3 * 256 * 256 * 4 * 4))
read -r one_peak _ <<<"$(peak one)"
read -r ep2_peak ep2_plan <<<"$(peak ep2)"
awk -v m="$ep2_peak" -v p="$ep2_plan" -v one="$one_peak" -v e="$experts_bytes" 'BEGIN {
    printf "stage rank with 2 expert servers: peak %.2f MiB, plan %.2f MiB; one process %.2f MiB; routed experts %.2f MiB\n",
        m / 2^20, p / 2^20, one / 2^20, e / 2^20
    exit (m / p < 0.9 || m / p > 1.1 || one - m < e) }' || fail "the stage rank of the ep 2 run holds routed-expert memory"
expect_in "$WORK/ep2.out" "15.00 MiB of parameters, 60.00 MiB with gradients and AdamW state"

# SIGUSR1 to one expert server alone: the job saves the last completed step on every role and
# exits 0; the same command resumes, and every step equals the straight run's bit for bit.
STOP=(--training.steps 20 --checkpoint.interval 100 --training.local_batch_size 4)
train straight 1 2 "${STOP[@]}" --checkpoint.enable false
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${COMMON[@]}" "${STOP[@]}" --job.dump_folder "$WORK/stopped" \
    --parallelism.expert_parallel_degree 2 : -n 1 "$BIN/dsv3-stage" : -n 2 "$BIN/dsv3-expert" >"$WORK/stopped.out" 2>&1 &
job=$!
for _ in $(seq 600); do
    [ "$(cat "$WORK/stopped/metrics.jsonl" 2>/dev/null | wc -l)" -ge 4 ] && break
    sleep 0.1
done
kill -USR1 "$(pgrep -f "^$BIN/dsv3-expert" | head -1)"
wait $job || { cat "$WORK/stopped.out"; fail "the job whose expert server got SIGUSR1 failed"; }
expect_in "$WORK/stopped.out" "stopping on SIGUSR1 after step"
train stopped 1 2 "${STOP[@]}"
expect_in "$WORK/stopped.out" "checkpoint: resumed from $WORK/stopped/checkpoint/step-"
same_steps "$WORK/straight" "$WORK/stopped" 1 20

run_expect_fail "$WORK/ep3.out" "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${COMMON[@]}" \
    --job.dump_folder "$WORK/ep3" --parallelism.expert_parallel_degree 3 : -n 1 "$BIN/dsv3-stage" : -n 3 "$BIN/dsv3-expert"
expect_in "$WORK/ep3.out" "parallelism.expert_parallel_degree 3 does not divide model.num_experts 8"
echo "expert servers: ok"
