#!/usr/bin/env bash
# Checkpoints end to end on a small model: 20 steps straight and 10 steps + stop + resume to
# 20 give bitwise-identical losses (synthetic and token-file data); keep_latest_k never removes
# the checkpoint resumed from; a process SIGKILLed in the middle of a save (after the shards,
# and after the manifest) leaves the previous checkpoint loadable and no complete-looking new
# one; missing, truncated and corrupt files and a checkpoint of another model are clear errors.
source "$(dirname "$0")/lib.sh"
SMALL=("${SMALL_MODEL[@]}" --metrics.log_freq 1 --lr_scheduler.warmup_steps 3
    --lr_scheduler.total_steps 20 --checkpoint.interval 5 --checkpoint.last_save_model_only false)

# run DUMP_FOLDER [overrides...]: two data-parallel stage ranks, checkpointing on.
run() {
    local dir=$1
    shift
    "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" "${SMALL[@]}" \
        --checkpoint.enable --job.dump_folder "$dir" "$@" : -n 2 "$BIN/dsv3-stage"
}

# --- exact resume: synthetic data ---
run "$WORK/straight" --training.steps 20 >"$WORK/straight.out" 2>&1 || { cat "$WORK/straight.out"; fail "straight run"; }
run "$WORK/resumed" --training.steps 10 >"$WORK/r1.out" 2>&1 || { cat "$WORK/r1.out"; fail "first half"; }
[ -f "$WORK/resumed/checkpoint/step-10/manifest.json" ] || fail "no step-10 checkpoint"
run "$WORK/resumed" --training.steps 20 --checkpoint.keep_latest_k 1 --checkpoint.load_step 5 \
    >"$WORK/r2.out" 2>&1 || { cat "$WORK/r2.out"; fail "resumed run"; }
expect_in "$WORK/r2.out" "resumed from $WORK/resumed/checkpoint/step-5"
same_steps "$WORK/straight" "$WORK/resumed" 1 20
# keep_latest_k 1 removed step-10 and step-15 but kept step-5, the one resumed from.
for s in 5 20; do [ -d "$WORK/resumed/checkpoint/step-$s" ] || fail "step-$s was removed"; done
for s in 10 15; do [ ! -e "$WORK/resumed/checkpoint/step-$s" ] || fail "step-$s was kept (keep_latest_k 1)"; done
# --- exact resume from checkpoints written in the background (checkpoint.async_mode) ---
run "$WORK/async" --training.steps 10 --checkpoint.async_mode async >"$WORK/a1.out" 2>&1 ||
    { cat "$WORK/a1.out"; fail "first half, async"; }
expect_in "$WORK/a1.out" "checkpoint: saved $WORK/async/checkpoint/step-5 (full state) in"
expect_in "$WORK/a1.out" ", written in the background"
run "$WORK/async" --training.steps 20 --checkpoint.async_mode async --checkpoint.load_step 5 \
    >"$WORK/a2.out" 2>&1 || { cat "$WORK/a2.out"; fail "resumed run, async"; }
expect_in "$WORK/a2.out" "resumed from $WORK/async/checkpoint/step-5"
same_steps "$WORK/straight" "$WORK/async" 1 20
python3 - "$WORK/resumed/checkpoint/step-20" "$WORK/async/checkpoint/step-20" <<'PY' || fail "async and synchronous checkpoints differ"
import sys, numpy as np
from ckpt_tensors import checkpoint_tensors
a, b = checkpoint_tensors(sys.argv[1]), checkpoint_tensors(sys.argv[2])
assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
print("step-20 written after background saves equals the synchronous one")
PY

# With checkpoint.enable = false the checkpoints there are left alone, and the run says so.
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" "${SMALL[@]}" \
    --job.dump_folder "$WORK/resumed" --training.steps 1 : -n 2 "$BIN/dsv3-stage" >"$WORK/off.out" 2>&1 ||
    { cat "$WORK/off.out"; fail "run with checkpoint.enable = false"; }
expect_in "$WORK/off.out" "checkpoint.enable is false: $WORK/resumed/checkpoint holds 2 checkpoint folder(s) (the latest step-20)"
expect_count "$WORK/off.out" "resumed from" 0

# The files are global-shape datasets under torchtitan's FQNs, readable with h5py.
python3 - "$WORK/resumed/checkpoint/step-20" <<'PY' || fail "h5py cannot read the checkpoint"
import sys, h5py, json
d = sys.argv[1]
m = h5py.File(f"{d}/model.h5", "r")
assert m["layers.1.moe.experts.w1"].shape == (4, 32, 64), m["layers.1.moe.experts.w1"].shape
assert m["layers.2.moe.expert_bias"].shape == (4,)
assert m.attrs["step"] == 20 and m.attrs["format_version"] == 1
o = h5py.File(f"{d}/optimizer.h5", "r")
assert o["exp_avg/tok_embeddings.weight"].shape == (256, 64)
assert abs(o["exp_avg_sq/norm.weight"][:]).sum() > 0
state = json.load(open(f"{d}/train_state.json"))
assert state["step"] == 20 and state["data"]["windows_consumed"] == 20 * 4, state
print("h5py: model and optimizer datasets ok")
PY

# --- exact resume: token file ---
python3 -c 'import numpy as np; np.random.default_rng(7).integers(0, 256, 40000, dtype="<u4").tofile("'"$WORK/tokens.bin"'")'
tok=(--training.dataset tokens --training.dataset_path "$WORK/tokens.bin")
run "$WORK/tok_straight" "${tok[@]}" --training.steps 20 >"$WORK/ts.out" 2>&1 || { cat "$WORK/ts.out"; fail "token run"; }
run "$WORK/tok_resumed" "${tok[@]}" --training.steps 10 >"$WORK/tr1.out" 2>&1 || { cat "$WORK/tr1.out"; fail "token first half"; }
run "$WORK/tok_resumed" "${tok[@]}" --training.steps 20 >"$WORK/tr2.out" 2>&1 || { cat "$WORK/tr2.out"; fail "token resume"; }
expect_in "$WORK/tr2.out" "resumed from $WORK/tok_resumed/checkpoint/step-10"
same_steps "$WORK/tok_straight" "$WORK/tok_resumed" 1 20

# --- SIGKILL in the middle of a save ---
for point in shards:10 manifest:10; do
    dir=$WORK/kill_${point%%:*}
    rc=0
    DSV3_CKPT_TEST_KILL=$point run "$dir" --training.steps 20 >"$dir.out" 2>&1 || rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || { cat "$dir.out"; fail "the run killed at $point should fail (rc $rc)"; }
    [ -f "$dir/checkpoint/step-5/manifest.json" ] || fail "$point: step-5 is gone"
    [ -d "$dir/checkpoint/step-10.tmp" ] || fail "$point: no step-10.tmp left behind"
    [ ! -e "$dir/checkpoint/step-10" ] || fail "$point: a step-10 that looks complete"
    run "$dir" --training.steps 20 >"$dir.resume" 2>&1 || { cat "$dir.resume"; fail "resume after $point"; }
    expect_in "$dir.resume" "resumed from $dir/checkpoint/step-5"
    same_steps "$WORK/straight" "$dir" 1 20
    [ ! -e "$dir/checkpoint/step-10.tmp" ] && [ -f "$dir/checkpoint/step-10/manifest.json" ] ||
        fail "$point: the resumed run did not replace step-10.tmp by a complete step-10"
done

# --- bad checkpoints: each a copy of step-10 of the straight run, loaded by a resume ---
bad() { # bad NAME DAMAGE-COMMAND EXPECTED-TEXT
    local dir=$WORK/bad_$1
    mkdir -p "$dir/checkpoint"
    cp -r "$WORK/straight/checkpoint/step-10" "$dir/checkpoint/"
    (cd "$dir/checkpoint/step-10" && eval "$2")
    run_expect_fail "$dir.out" run "$dir" --training.steps 20
    expect_in "$dir.out" "$3"
}
bad missing "rm shards/model-s00000.h5" "shards/model-s00000.h5 is missing"
bad truncated "truncate -s 1000 shards/optimizer-s00000.h5" "shards/optimizer-s00000.h5 has 1000 bytes"
bad corrupt "printf 'XXXX' | dd of=shards/model-s00000.h5 bs=1 seek=5000 conv=notrunc status=none" "is corrupt: shards/model-s00000.h5"
bad manifest "echo '{' > manifest.json" "manifest.json is not valid JSON"
run_expect_fail "$WORK/load_step.out" run "$WORK/straight" --training.steps 20 --checkpoint.load_step 7
expect_in "$WORK/load_step.out" "checkpoint.load_step 7"
# Another model: the first tensor whose shape differs is named with both shapes.
run_expect_fail "$WORK/other.out" run "$WORK/other" --training.steps 2 --model.dim 32 \
    --checkpoint.initial_load_path "$WORK/straight/checkpoint/step-10"
expect_in "$WORK/other.out" "dataset tok_embeddings.weight has shape (256, 64) but the model's tensor is (256, 32)"
run_expect_fail "$WORK/fewer.out" run "$WORK/fewer" --training.steps 2 --model.n_layers 2 \
    --checkpoint.initial_load_path "$WORK/straight/checkpoint/step-10"
expect_in "$WORK/fewer.out" "holds dataset layers.2.attention.kv_norm.weight, which this model does not have"
echo "checkpoint: ok"
