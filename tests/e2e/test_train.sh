#!/usr/bin/env bash
# Training end to end through ./run/train.sh on the built-in synthetic dataset: the loss falls
# clearly, metrics.jsonl holds every step, bf16 GEMMs give losses within 2e-2 of fp32's, and two
# data-parallel stage ranks give the losses of one rank accumulating the same global batch.
source "$(dirname "$0")/lib.sh"
export BUILD_DIR=$DSV3_BUILD_ROOT MPIEXEC_FLAGS=--oversubscribe
train=$DSV3_SOURCE_ROOT/run/train.sh
short=(--training.steps 10 --training.seq_len 64 --training.local_batch_size 4
    --lr_scheduler.warmup_steps 2 --metrics.log_freq 1)

losses() { python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["loss"]) for l in open(sys.argv[1])))' "$1"; }

NPROC=1 timeout 300 "$train" "${short[@]}" --job.dump_folder "$WORK/one" >"$WORK/one.out" 2>&1 ||
    { cat "$WORK/one.out"; fail "training failed"; }
expect_in "$WORK/one.out" "entropy floor"
expect_in "$WORK/one.out" "above the dataset's entropy floor"
[ "$(wc -l <"$WORK/one/metrics.jsonl")" -eq 10 ] || fail "metrics.jsonl should hold 10 steps"
read -r -a one <<<"$(losses "$WORK/one/metrics.jsonl")"
awk -v first="${one[0]}" -v a="${one[7]}" -v b="${one[8]}" -v c="${one[9]}" \
    'BEGIN { last = (a + b + c) / 3; printf "loss %.4f -> %.4f (mean of the last 3)\n", first, last; exit !(last < first - 1.0) }' ||
    fail "the loss did not fall by more than 1 nat in 10 steps"

# bf16 GEMMs (training.mixed_precision_param = "bfloat16"): each of the 10 losses within 2e-2 of
# fp32's, and the loss falls as it does in fp32. A CPU without AVX512-BF16 refuses the key.
NPROC=1 timeout 300 "$train" "${short[@]}" --training.mixed_precision_param bfloat16 \
    --job.dump_folder "$WORK/bf16" >"$WORK/bf16.out" 2>&1 || true
if grep -q "AVX512-BF16" "$WORK/bf16.out"; then
    expect_in "$WORK/bf16.out" 'training.mixed_precision_param = "bfloat16" is not possible'
    echo "bf16: refused on this CPU (no AVX512-BF16), as expected"
else
    [ -s "$WORK/bf16/metrics.jsonl" ] || { cat "$WORK/bf16.out"; fail "bf16 training failed"; }
    expect_in "$WORK/bf16.out" "GEMMs in bf16 (fp32 sums; training.mixed_precision_param)"
    expect_in "$WORK/one.out" "GEMMs in fp32"
    close_losses "$WORK/one" "$WORK/bf16" 2e-2 0
    read -r -a bf16 <<<"$(losses "$WORK/bf16/metrics.jsonl")"
    awk -v first="${bf16[0]}" -v a="${bf16[7]}" -v b="${bf16[8]}" -v c="${bf16[9]}" \
        'BEGIN { exit !((a + b + c) / 3 < first - 1.0) }' || fail "the bf16 loss did not fall by more than 1 nat"
fi

# Data parallel: 2 ranks × local batch 4 against 1 rank × 2 micro-batches of 4.
global=(--training.global_batch_size 8 --training.steps 3)
NPROC=2 timeout 300 "$train" "${short[@]}" "${global[@]}" --job.dump_folder "$WORK/dp2" >"$WORK/dp2.out" 2>&1 ||
    { cat "$WORK/dp2.out"; fail "data-parallel training failed"; }
NPROC=1 timeout 300 "$train" "${short[@]}" "${global[@]}" --job.dump_folder "$WORK/acc" >"$WORK/acc.out" 2>&1 ||
    { cat "$WORK/acc.out"; fail "accumulated training failed"; }
close_losses "$WORK/acc" "$WORK/dp2" 1e-5
echo "train: ok"
