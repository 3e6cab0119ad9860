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
expect_in "$out" "dry run: rank 1: stage pp 0 dp_replicate 0 dp_shard 0 cp 0 tp 0; layers 0-2 + embedding;"
expect_in "$out" "dry run: rank 4096: stage pp 15 dp_replicate 0 dp_shard 31 cp 0 tp 7; layers 59-60 + norm, output;"
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
expect_in "$out" "dry run: rank 2048: stage pp 7 dp_replicate 0 dp_shard 31 cp 0 tp 7; layers 55-60 + norm, output; 11,868,384 params: 45.27 MiB params, 45.27 MiB grads, 90.55 MiB optimizer, 3.88 GiB gather buffers,"
expect_in "$out" "nothing was allocated"

# The debug model on a 2-stage pipeline: torchtitan's split counts the embedding and the head as
# one layer each (8 effective layers, 4 per stage); 1F1B over 4 micro-batches keeps 2 in flight
# on the first stage and 1 on the last (GPipe all 4), and its actions are printed rank by rank.
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" \
    --job.dry_run --nproc 2 --parallelism.pipeline_parallel_degree 2 \
    --training.local_batch_size 4 --parallelism.print_schedule true >"$out" 2>&1 ||
    { cat "$out"; fail "debug pipeline dry run failed"; }
expect_in "$out" "rank 1: stage pp 0 dp_replicate 0 dp_shard 0 cp 0 tp 0; layers 0-2 + embedding;"
expect_in "$out" "rank 2: stage pp 1 dp_replicate 0 dp_shard 0 cp 0 tp 0; layers 3-5 + norm, output;"
expect_in "$out" "0 B gather buffers, 71.32 MiB activations" # 2 micro-batches in flight
expect_in "$out" "0 B gather buffers, 48.44 MiB activations" # 1; the head and the exchange buffers
expect_in "$out" "schedule: 1F1B, 4 micro-batches × 1 sequences over 2 stages, theoretical bubble 20.0%"
expect_in "$out" "schedule: rank 0: F0.0 SF0.0 RB0.0 F1.0 SF1.0 B0.0 RB1.0 F2.0 SF2.0 B1.0 RB2.0 F3.0 SF3.0 RB3.0 B2.0 B3.0"
expect_in "$out" "schedule: rank 1: RF0.1 F0.1 RF1.1 B0.1 SB0.1 F1.1 RF2.1 B1.1 SB1.1 F2.1 RF3.1 B2.1 SB2.1 F3.1 B3.1 SB3.1"
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" \
    --job.dry_run --nproc 2 --parallelism.pipeline_parallel_degree 2 \
    --parallelism.pipeline_parallel_schedule GPipe --training.local_batch_size 4 >"$out" 2>&1 ||
    { cat "$out"; fail "debug GPipe dry run failed"; }
expect_in "$out" "schedule: GPipe, 4 micro-batches × 1 sequences over 2 stages, theoretical bubble 20.0%"
expect_in "$out" "0 B gather buffers, 119.37 MiB activations" # all 4 in flight on each stage
expect_in "$out" "0 B gather buffers, 122.79 MiB activations"

# Interleaved 1F1B: 4 stages of 2 effective layers, loop style (rank 0 runs stages 0 and 2,
# rank 1 stages 1 and 3), each rank's models and slots planned, and each pipeline rank's expert
# servers hold the experts of both its stages.
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" \
    --job.dry_run --nproc 2 --parallelism.pipeline_parallel_degree 2 \
    --parallelism.pipeline_parallel_schedule Interleaved1F1B --training.local_batch_size 4 \
    --parallelism.print_schedule true --parallelism.expert_parallel_degree 2 >"$out" 2>&1 ||
    { cat "$out"; fail "debug Interleaved1F1B dry run failed"; }
expect_in "$out" "rank 1: stage pp 0 dp_replicate 0 dp_shard 0 cp 0 tp 0; layers 0-0 + embedding, layers 3-4;"
expect_in "$out" "rank 2: stage pp 1 dp_replicate 0 dp_shard 0 cp 0 tp 0; layers 1-2, layers 5-5 + norm, output;"
expect_in "$out" "schedule: Interleaved1F1B, 4 micro-batches × 1 sequences over 2 ranks with 2 stages each, theoretical bubble 11.1%"
expect_in "$out" "schedule: rank 0: F0.0 SF0.0 RF0.2 F1.0 SF1.0 RF1.2 F0.2 SF0.2 F1.2 SF1.2 RB0.2 F2.0"
expect_in "$out" "rank 3: expert pp 0 ep 0; routed experts 0-3 of the MoE layers among 0-0, 3-4;"
expect_count "$out" "dry run: note:" 0

# Pipeline keys that do not fit, named with their numbers.
dry() { "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" \
    --job.dry_run "$@"; }
run_expect_fail "$out" dry --parallelism.pipeline_parallel_microbatch_size 2
expect_in "$out" "pipeline_parallel_microbatch_size 2, pipeline_parallel_layers_per_stage -1, pipeline_parallel_first_stage_less_layers 1 and pipeline_parallel_last_stage_less_layers 1 apply only to a pipeline, but pipeline_parallel_degree is 1"
run_expect_fail "$out" dry --nproc 2 --parallelism.pipeline_parallel_degree 2 \
    --parallelism.pipeline_parallel_microbatch_size 3 --training.local_batch_size 4
expect_in "$out" "training.local_batch_size 4 is not a multiple of parallelism.pipeline_parallel_microbatch_size 3"
run_expect_fail "$out" dry --nproc 2 --parallelism.pipeline_parallel_degree 2 \
    --parallelism.pipeline_parallel_layers_per_stage 2
expect_in "$out" "model.n_layers 6 with pipeline_parallel_layers_per_stage 2 (and the embedding and head counted as 1 and 1 layers) makes 4 pipeline stages, but pipeline_parallel_schedule \"1F1B\" runs one stage on each of the pipeline_parallel_degree 2 ranks"
run_expect_fail "$out" dry --nproc 2 --parallelism.pipeline_parallel_degree 2 \
    --parallelism.pipeline_parallel_schedule Interleaved1F1B --training.local_batch_size 3
expect_in "$out" "pipeline schedule Interleaved1F1B needs a multiple of parallelism.pipeline_parallel_degree 2 micro-batches, but it gets 3"
run_expect_fail "$out" dry --nproc 2 --parallelism.pipeline_parallel_degree 2 \
    --parallelism.pipeline_parallel_schedule Interleaved1F1B --parallelism.pipeline_parallel_layers_per_stage 3
expect_in "$out" "makes 3 pipeline stages, but pipeline_parallel_schedule \"Interleaved1F1B\" runs the same number of stages, at least 2, on each of the pipeline_parallel_degree 2 ranks"
run_expect_fail "$out" dry --nproc 4 --parallelism.pipeline_parallel_degree 4 \
    --parallelism.pipeline_parallel_first_stage_less_layers 3
expect_in "$out" "pipeline_parallel_first_stage_less_layers 3 or pipeline_parallel_last_stage_less_layers 1 exceeds the 2 effective layers of the smallest of the 4 pipeline stages (model.n_layers 6)"
dry --nproc 2 --parallelism.pipeline_parallel_degree 2 \
    --parallelism.pipeline_parallel_layers_per_stage 4 >"$out" 2>&1 ||
    { cat "$out"; fail "layers_per_stage 4 on 2 stages failed"; }
expect_in "$out" "layers 3-5 + norm, output;"

# The debug model: one stage rank holds every parameter (33,014,016 × 4 bytes = 125.94 MiB).
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" \
    --job.dry_run >"$out" 2>&1 || { cat "$out"; fail "debug dry run failed"; }
expect_in "$out" "33,014,016 parameters in total, 28,098,816 active per token"
expect_in "$out" "rank 1: stage pp 0 dp_replicate 0 dp_shard 0 cp 0 tp 0; layers 0-5 + embedding + norm, output; 33,014,016 params: 125.94 MiB params, 125.94 MiB grads, 251.88 MiB optimizer"
echo "dry run: ok"
