#!/usr/bin/env bash
# NaN and infinite numbers: a NaN injected into one gradient (test hook DSV3_TEST_NONFINITE_GRAD)
# stops the run, non-zero, naming the step, the tensor and the last good checkpoint, and nothing
# after it is saved; with training.skip_nonfinite_steps the step is skipped instead, leaving
# parameters, expert biases and AdamW state exactly as they were; a learning rate that makes
# training diverge stops it before any non-finite state is saved.
source "$(dirname "$0")/lib.sh"
SMALL=("${SMALL_MODEL[@]}" --metrics.log_freq 1 --lr_scheduler.warmup_steps 2
    --checkpoint.enable --checkpoint.interval 1 --checkpoint.last_save_model_only false)
run() {
    local dir=$1
    shift
    "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${SMALL[@]}" --job.dump_folder "$dir" "$@" : -n 2 "$BIN/dsv3-stage"
}
bad=layers.1.attention.wkv_a.weight

# 1. A NaN gradient at step 3 stops the run; step-2 stays the last checkpoint.
export DSV3_TEST_NONFINITE_GRAD=3:$bad
run_expect_fail "$WORK/stop.out" run "$WORK/stop" --training.steps 6
expect_count "$WORK/stop.out" "error: numeric error: step 3: loss " 1
expect_in "$WORK/stop.out" "NaN or infinite values first in the gradient of $bad; the parameters were not updated and the last good checkpoint is $WORK/stop/checkpoint/step-2"
[ "$(ls "$WORK/stop/checkpoint")" = "$(printf 'step-1\nstep-2')" ] || fail "checkpoints after the stop: $(ls "$WORK/stop/checkpoint")"

# 2. Skipped: the state saved after step 3 is the state saved after step 2.
run "$WORK/skip" --training.steps 4 --training.skip_nonfinite_steps 1 >"$WORK/skip.out" 2>&1 ||
    { cat "$WORK/skip.out"; fail "run with skip_nonfinite_steps 1"; }
expect_count "$WORK/skip.out" "warning: step 3: loss " 1
expect_in "$WORK/skip.out" "step skipped, parameters and optimizer state unchanged (1 of training.skip_nonfinite_steps = 1)"
python3 - "$WORK/skip/checkpoint" <<'PY' || fail "the skipped step changed the state"
import sys, numpy as np
from ckpt_tensors import checkpoint_tensors
a, b = (checkpoint_tensors(f"{sys.argv[1]}/step-{s}") for s in (2, 3))
assert sorted(a) == sorted(b)
assert all(np.array_equal(a[k], b[k]) for k in a), [k for k in a if not np.array_equal(a[k], b[k])]
print(f"{len(a)} tensors identical after the skipped step")
PY
unset DSV3_TEST_NONFINITE_GRAD

# 3. Diverging (optimizer.lr 1000): stopped at the first non-finite step, every checkpoint finite.
run_expect_fail "$WORK/lr.out" run "$WORK/lr" --training.steps 20 --optimizer.lr 1000 --checkpoint.keep_latest_k 1
expect_in "$WORK/lr.out" "error: numeric error: step "
python3 - "$WORK/lr/checkpoint" <<'PY' || fail "a non-finite checkpoint was saved"
import os, sys, numpy as np
from ckpt_tensors import checkpoint_tensors
root = sys.argv[1]
folders = [d for d in os.listdir(root) if d.startswith("step-")]
assert folders, "no checkpoint"
for d in folders:
    t = checkpoint_tensors(f"{root}/{d}")
    bad = [k for k in t if not np.isfinite(t[k]).all()]
    assert not bad, (d, bad)
print(f"{folders}: finite")
PY
echo "nonfinite: ok"
