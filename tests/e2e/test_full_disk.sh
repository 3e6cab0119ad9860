#!/usr/bin/env bash
# A checkpoint save on a full file system (a small tmpfs): the job stops with one message naming
# the folder, every failing rank's own reason (the operating system's "No space left on
# device"), the bytes the checkpoint needs and those free; the unfinished folder is gone and the
# previous checkpoint still resumes. With checkpoint.fail_on_error = false the run reports each
# failed save and trains on. Skipped where a tmpfs cannot be mounted (not root, no permission).
source "$(dirname "$0")/lib.sh"
disk=$WORK/disk
mkdir -p "$disk"
mount -t tmpfs -o size=6m tmpfs "$disk" 2>/dev/null || { echo "cannot mount a tmpfs here: skipped"; exit 77; }
trap 'umount "$disk"; rm -rf "$WORK"' EXIT
SMALL=("${SMALL_MODEL[@]}" --lr_scheduler.warmup_steps 2 --lr_scheduler.total_steps 12
    --checkpoint.enable --checkpoint.interval 5 --checkpoint.last_save_model_only false)
run() {
    "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${SMALL[@]}" --job.dump_folder "$disk/run" "$@" : -n 2 "$BIN/dsv3-stage"
}
ckpt=$disk/run/checkpoint

run --training.steps 5 >"$WORK/first.out" 2>&1 || { cat "$WORK/first.out"; fail "first run"; }
[ -f "$ckpt/step-5/manifest.json" ] || fail "no step-5 checkpoint"
# The step lines go on to metrics.jsonl during the later runs: kept off the full file system (a
# link), so that only the checkpoints run out of room, whatever page the file has reached.
mv "$disk/run/metrics.jsonl" "$WORK/metrics.jsonl"
ln -s "$WORK/metrics.jsonl" "$disk/run/metrics.jsonl"
dd if=/dev/zero of="$disk/filler" bs=4k 2>/dev/null || true # fills the file system

run_expect_fail "$WORK/full.out" run --training.steps 10
expect_count "$WORK/full.out" "error: I/O error: checkpoint step 10 could not be saved in $ckpt: the coordinator: cannot write $ckpt/step-10.tmp/train_state.json: No space left on device; stage rank 0: " 1
# Whichever HDF5 call ran out of room, the stage rank's reason is the system's.
grep -q "stage rank 0: [^;]*shards/model-s00000.h5: [^;]*: No space left on device;.* it needs about 1.78 MiB (the model and both AdamW moments in float32), and the file system there has 0 B free. The checkpoints saved before are untouched" "$WORK/full.out" ||
    { cat "$WORK/full.out"; fail "the stage rank's reason is missing"; }
[ ! -e "$ckpt/step-10.tmp" ] || fail "the failed save left step-10.tmp"

run --training.steps 12 --checkpoint.fail_on_error false >"$WORK/on.out" 2>&1 || { cat "$WORK/on.out"; fail "run with fail_on_error = false"; }
expect_count "$WORK/on.out" "warning: checkpoint step 10 could not be saved" 1
expect_count "$WORK/on.out" "warning: checkpoint step 12 could not be saved" 1
expect_in "$WORK/on.out" "training goes on (checkpoint.fail_on_error = false)"
expect_in "$WORK/on.out" "step    12"
[ "$(ls "$ckpt")" = step-5 ] || fail "checkpoint folders after the failed saves: $(ls "$ckpt")"

rm "$disk/filler"
run --training.steps 12 >"$WORK/resumed.out" 2>&1 || { cat "$WORK/resumed.out"; fail "resumed run"; }
expect_in "$WORK/resumed.out" "resumed from $ckpt/step-5"
[ -f "$ckpt/step-10/manifest.json" ] || fail "no step-10 checkpoint once there is room"
echo "full disk: ok"
