#!/usr/bin/env bash
# Metrics end to end through ./run/train.sh: a short data-parallel run with TensorBoard,
# profiling, validation and expert-count dumping on, whose every output is checked
# (check_metrics.py reads the event file with TensorBoard's own reader), rendered by
# run/plot.sh; then a validation on a token file whose held-out windows are exactly the next
# step's training windows, so the validation loss must equal that step's training loss (with
# held-out micro-batches half padding); and a validation.seq_len the model cannot take.
source "$(dirname "$0")/lib.sh"
export BUILD_DIR=$DSV3_BUILD_ROOT MPIEXEC_FLAGS=--oversubscribe
train=$DSV3_SOURCE_ROOT/run/train.sh

# A Python that has TensorBoard: the test venv's (run/test.sh puts it first on PATH).
py=python3
if ! $py -c 'import tensorboard' 2>/dev/null; then
    py=$DSV3_SOURCE_ROOT/.venv/bin/python
    [ -x "$py" ] && $py -c 'import tensorboard' 2>/dev/null ||
        fail "no Python with the tensorboard package: run \`source run/common.sh; dsv3_ensure_venv\`"
fi

# 1. Six steps on 2 stage ranks (global batch 8 × 64 tokens), logged at 1, 4 (log_freq), 6 (the
# last) and 3, 6 (validation), traced at 2, 4, 6.
dump=$WORK/run
NPROC=2 timeout 300 "$train" --training.steps 6 --training.seq_len 64 --training.local_batch_size 4 \
    --lr_scheduler.warmup_steps 2 --metrics.log_freq 4 --metrics.enable_tensorboard \
    --metrics.dump_expert_counts --profiling.enable_profiling --profiling.profile_freq 2 \
    --profiling.save_traces_folder profile_trace --validation.enable --validation.freq 3 \
    --validation.steps 1 --job.dump_folder "$dump" >"$WORK/run.out" 2>&1 ||
    { cat "$WORK/run.out"; fail "training with metrics failed"; }
for text in "start-up: config:" "start-up: topology:" "start-up: allocation:" "start-up: peak:" \
    "MFU against a measured peak" "TensorBoard: writing" "profile: step 4 traced"; do
    expect_in "$WORK/run.out" "$text"
done
# The peak names OpenBLAS's kernels: never its generic SSE3 ones on a CPU with AVX, unless the
# user chose them (a release older than the CPU falls back to them; the ranks then restart on
# the kernels the CPU's instruction sets allow).
kernels=$(sed -n "s/.*start-up: peak: .*OpenBLAS's \([A-Za-z0-9]*\) kernels.*/\1/p" "$WORK/run.out" | head -1)
[ -n "$kernels" ] || fail "the start-up peak line names no OpenBLAS kernels"
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx /proc/cpuinfo; then
    [ "$kernels" != Prescott ] || fail "OpenBLAS runs its generic Prescott kernels on a CPU with AVX"
fi
expect_count "$WORK/run.out" "] step " 4
expect_count "$WORK/run.out" "      time " 4
expect_count "$WORK/run.out" "      experts: max/mean" 4
expect_count "$WORK/run.out" "validate step" 2
# The output is a file, so run/train.sh asked for plain lines.
! grep -q $'\033\\[' "$WORK/run.out" || fail "colour escapes in output that is not a terminal"
$py "$(dirname "$0")/check_metrics.py" "$dump" 1,3,4,6 3,6 2,4,6 2 512 || fail "metrics outputs (above)"
# Against a measured peak MFU never reads above 100% (a faster step raises the peak, saying so).
$py - "$dump/metrics.jsonl" <<'PY' || fail "MFU above 100% against a measured peak"
import json, sys
mfu = [json.loads(l)["mfu"] for l in open(sys.argv[1])]
assert all(0 < m <= 100 for m in mfu), mfu
PY

"$DSV3_SOURCE_ROOT/run/plot.sh" "$dump" >"$WORK/plot.out" 2>&1 || { cat "$WORK/plot.out"; fail "run/plot.sh failed"; }
for name in loss lr grad_norm tps expert_imbalance overview; do
    png=$dump/plots/$name.png
    [ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "$png is not a PNG"
    [ "$(stat -c %s "$png")" -gt 10000 ] || fail "$png is too small to hold a plot"
done

# 2. Token files: training windows 0..11 of 33 tokens; the held-out file starts at window 4, so
# validation after step 1 (2 batches × 2 sequences, in micro-batches of 4 rows: half padding)
# sees step 2's training windows under the same parameters.
python3 - "$WORK/train.u32" "$WORK/valid.u32" <<'PY'
import random, struct, sys
random.seed(0)
ids = [random.randrange(1, 2048) for _ in range(12 * 33)]
open(sys.argv[1], "wb").write(struct.pack(f"<{len(ids)}I", *ids))
open(sys.argv[2], "wb").write(struct.pack(f"<{len(ids) - 4 * 33}I", *ids[4 * 33:]))
PY
NPROC=1 timeout 300 "$train" --training.steps 2 --training.seq_len 32 --training.local_batch_size 4 \
    --metrics.peak_tflops 0.001 \
    --training.dataset tokens --training.dataset_path "$WORK/train.u32" --lr_scheduler.warmup_steps 1 \
    --metrics.log_freq 1 --validation.enable --validation.freq 1 --validation.dataset tokens \
    --validation.dataset_path "$WORK/valid.u32" --validation.local_batch_size 2 --validation.steps 2 \
    --job.dump_folder "$WORK/tokens" >"$WORK/tokens.out" 2>&1 ||
    { cat "$WORK/tokens.out"; fail "training with token-file validation failed"; }
# A configured peak below what a step reaches is kept, and the MFU above 100% is explained once.
expect_count "$WORK/tokens.out" "metrics.peak_tflops = 0.001 is below the" 1
python3 - "$WORK/tokens/metrics.jsonl" <<'PY' || fail "the validation loss is not the next step's training loss"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
v, t = r[0]["validation_loss"], r[1]["loss"]
print(f"validation loss after step 1 {v:.7f}, training loss of step 2 {t:.7f}")
assert abs(v - t) <= 1e-5 * abs(t), (v, t)
PY

# 3. A held-out length the model was not built for.
run_expect_fail "$WORK/bad.out" "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --print-launch \
    --training.seq_len 64 --validation.enable --validation.seq_len 128
expect_in "$WORK/bad.out" "validation.seq_len 128 exceeds training.seq_len 64"
echo "metrics: ok"
