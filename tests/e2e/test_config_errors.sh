#!/usr/bin/env bash
# A bad config stops the whole job before any work: one message naming file, line and key,
# a non-zero exit, no hang — also when the stage ranks are already launched.
source "$(dirname "$0")/lib.sh"
out=$WORK/out
launch() { "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "$@" : -n 2 "$BIN/dsv3-stage"; }

printf '[training]\nsteps = 10\nstepz = 3\n' >"$WORK/typo.toml"
run_expect_fail "$out" launch --job.config_file "$WORK/typo.toml"
expect_in "$out" "typo.toml:3: unknown key 'stepz' in [training] (did you mean 'steps'?)"
expect_count "$out" "unknown key" 1

printf '[training]\nsteps = "ten"\n' >"$WORK/type.toml"
run_expect_fail "$out" launch --job.config_file "$WORK/type.toml"
expect_in "$out" "type.toml:2: training.steps must be an integer, not string"

run_expect_fail "$out" launch --job.config_file "$CONF/debug_model.toml" --training.steps -5
expect_in "$out" "command line --training.steps: training.steps = -5 is out of range"

run_expect_fail "$out" launch --job.config_file "$CONF/debug_model.toml" --optimizer.lr 0
expect_in "$out" "optimizer.lr"

run_expect_fail "$out" launch --job.config_file "$CONF/debug_model.toml" --training.enable_cpu_offload true
expect_in "$out" "command line --training.enable_cpu_offload: training.enable_cpu_offload = true is not supported yet: it needs CPU offloading"

# A key that no code reads yet stops the job too, naming what it waits for.
run_expect_fail "$out" launch --job.config_file "$CONF/debug_model.toml" --debug.deterministic true
expect_in "$out" "debug.deterministic = true is not supported yet: it needs the CUDA backend's deterministic mode, which is not implemented (only the default false is accepted)"
expect_count "$out" "is not supported yet" 1

run_expect_fail "$out" launch --job.config_file "$CONF/debug_model.toml" --model.flavor 7B
expect_in "$out" "model.flavor"
expect_in "$out" "debugmodel"

run_expect_fail "$out" launch --job.config_file "$WORK/missing.toml"
expect_in "$out" "cannot open config file"
echo "config errors: ok"
