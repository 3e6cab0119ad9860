#!/usr/bin/env bash
# --job.dry_run plans the 671B model on 4096 stage ranks + 512 expert servers from one process,
# allocating no model memory, and prints every rank's share and the exact parameter counts; the
# 16B model on 8 FSDP ranks and the 671B model on 2048 stage ranks print each rank's memory:
# sharded states, gather buffers, activations and workspace.
source "$(dirname "$0")/lib.sh"
out=$WORK/out
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/deepseek_v3_671b.toml" \
    --job.dry_run --nproc 4096 --parallelism.pipeline_parallel_degree 16 \
    --parallelism.expert_parallel_degree 32 --parallelism.tensor_parallel_degree 8 >"$out" 2>&1 ||
    { cat "$out"; fail "dry run failed"; }
expect_in "$out" "671,026,404,352 parameters in total, 37,552,282,624 active per token"
expect_in "$out" "pp 16 × dp_replicate 1 × dp_shard 32 × cp 1 × tp 8 = 4096 stage ranks; ep 32 → 512 expert servers"
expect_count "$out" "dry run: rank " $((1 + 4096 + 512))
expect_in "$out" "dry run: rank 1: stage pp 0 dp_replicate 0 dp_shard 0 cp 0 tp 0; layers 0-3 + embedding;"
expect_in "$out" "dry run: rank 4096: stage pp 15 dp_replicate 0 dp_shard 31 cp 0 tp 7; layers 58-60 + norm, output;"
expect_in "$out" "dry run: rank 4097: expert pp 0 ep 0; routed experts 0-7"
expect_in "$out" "dry run: rank 4608: expert pp 15 ep 31; routed experts 248-255"
expect_in "$out" "nothing was allocated"

# 16B on 8 FSDP ranks: every rank holds 1/8 of the dense parameters (shards padded); the routed
# experts are on the config's 8 expert servers.
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/deepseek_v3_16b.toml" \
    --job.dry_run --nproc 8 >"$out" 2>&1 || { cat "$out"; fail "16B dry run failed"; }
expect_count "$out" "dry run: rank " $((1 + 8 + 8))
expect_in "$out" "dry run: rank 8: stage pp 0 dp_replicate 0 dp_shard 7 cp 0 tp 0; layers 0-26 + embedding + norm, output; 163,954,112 params: 625.44 MiB params, 625.44 MiB grads, 1.22 GiB optimizer, 3.91 GiB gather buffers,"
expect_in "$out" "(sharded over 8 dp_shard × cp ranks)"
expect_in "$out" "nothing was allocated"

# 671B on 2048 stage ranks (pp 8 × dp_shard 32 × tp 8) + 256 expert servers.
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/deepseek_v3_671b.toml" \
    --job.dry_run --nproc 2048 --parallelism.pipeline_parallel_degree 8 \
    --parallelism.expert_parallel_degree 32 --parallelism.tensor_parallel_degree 8 >"$out" 2>&1 ||
    { cat "$out"; fail "671B dry run on 2048 ranks failed"; }
expect_count "$out" "dry run: rank " $((1 + 2048 + 256))
expect_in "$out" "dry run: rank 2048: stage pp 7 dp_replicate 0 dp_shard 31 cp 0 tp 7; layers 54-60 + norm, output; 13,243,104 params: 50.52 MiB params, 50.52 MiB grads, 101.04 MiB optimizer, 4.32 GiB gather buffers,"
expect_in "$out" "nothing was allocated"

# The debug model: one stage rank holds every parameter (33,014,016 × 4 bytes = 125.94 MiB).
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" \
    --job.dry_run >"$out" 2>&1 || { cat "$out"; fail "debug dry run failed"; }
expect_in "$out" "33,014,016 parameters in total, 28,098,816 active per token"
expect_in "$out" "rank 1: stage pp 0 dp_replicate 0 dp_shard 0 cp 0 tp 0; layers 0-5 + embedding + norm, output; 33,014,016 params: 125.94 MiB params, 125.94 MiB grads, 251.88 MiB optimizer"
echo "dry run: ok"
