#!/usr/bin/env bash
# A launch that does not match the config stops every rank with one clear message naming every
# factor, and a non-zero exit — never a hang.
source "$(dirname "$0")/lib.sh"
out=$WORK/out
cfg=(--job.config_file "$CONF/debug_model.toml")

run_expect_fail "$out" "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${cfg[@]}" \
    --parallelism.tensor_parallel_degree 2 --parallelism.data_parallel_shard_degree 1 : -n 3 "$BIN/dsv3-stage"
expect_in "$out" "pp 1 × dp_replicate 1 × dp_shard 1 × cp 1 × tp 2 = 2, but 3 stage processes were launched"
expect_count "$out" "stage processes were launched" 1
expect_in "$out" "error: launch error: parallelism: pp 1"

run_expect_fail "$out" "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${cfg[@]}" \
    --parallelism.expert_parallel_degree 2 : -n 2 "$BIN/dsv3-stage" : -n 1 "$BIN/dsv3-expert"
expect_in "$out" "2 expert servers expected, but 1 was launched"

run_expect_fail "$out" "${MPIRUN[@]}" -n 2 "$BIN/dsv3-stage"
expect_in "$out" "dsv3-coordinator"

run_expect_fail "$out" "${MPIRUN[@]}" -n 2 "$BIN/dsv3-stage" : -n 1 "$BIN/dsv3-coordinator" "${cfg[@]}"
expect_in "$out" "coordinator"

run_expect_fail "$out" "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${cfg[@]}" \
    --training.global_batch_size 12 --training.local_batch_size 4 : -n 2 "$BIN/dsv3-stage"
expect_in "$out" "training.global_batch_size 12 is not a multiple of training.local_batch_size 4 × data-parallel degree 2"
echo "launch errors: ok"
