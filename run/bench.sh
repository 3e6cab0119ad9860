#!/usr/bin/env bash
# Training-step throughput of dsv3 against PyTorch running the same model, side by side, in one
# run: torchtitan's debugmodel architecture, the same batch and seq_len, threads pinned equal
# (OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = torch threads). Prints tokens/s of each and the
# ratio, and dsv3's peak RSS against parameters + gradients + AdamW state + activations.
#   ./run/bench.sh [--seq_len 512] [--batch 2] [--steps 3] [--threads "1 2"] [--repeat 3]
# Each side runs --repeat times, alternating, and its best run counts, so that a busy machine
# slows neither side more than the other.
#   ./run/bench.sh --fsdp [--seq_len 512] [--batch 2] [--steps 3] [--repeat 3]
# runs the training executables instead, on --batch sequences per step in three layouts of
# two cores: one process with 2 threads, data parallel over 2 processes (parameters
# replicated, gradients all-reduced) and FSDP over 2 processes (dp_shard 2), 1 thread each.
# Prints each layout's tokens/s (the median step after a warm-up step, best of --repeat runs),
# FSDP's against DP's, and the share of FSDP's communication time that overlapped compute
# (1 − time waiting for it / time from each operation's start to its completion).
#   ./run/bench.sh --tensor [--seq_len 512] [--batch 2] [--steps 3] [--repeat 3]
# trains on two processes of 1 thread each, data parallel (dp 2: half the batch each, gradients
# all-reduced), tensor parallel (tp 2: the whole batch each, half the heads, the hidden
# features and the vocabulary) and context parallel (cp 2: half of every sequence's positions
# each, keys and values all-gathered, then passed around the ring: context_parallel_rotate_method
# "alltoall"), and prints each one's tokens/s (as --fsdp measures them) and tp's and cp's time
# in their collectives per step (median step).
#   ./run/bench.sh --experts [--seq_len 512] [--batch 2] [--steps 3] [--repeat 3]
# runs the training executables on two cores with the routed experts on the stage process (one
# process, 2 threads) and on 2 expert servers (one stage process and 2 servers, 1 thread each),
# prints each one's tokens/s (as --fsdp measures them) and the bytes the servers exchanged per
# step against the theoretical minimum: rows (tokens × top_k × MoE layers) × dim × 4 bytes × 2 directions ×
# 2 passes (forward, backward).
#   ./run/bench.sh --checkpoint [--seq_len 512] [--batch 2] [--repeat 3]
# times whole training runs of 12 steps (one process, 2 threads) without checkpoints, with a
# full checkpoint every 3 steps written synchronously, and written in the background
# (checkpoint.async_mode = "async"; the last save is synchronous in both), best of --repeat,
# and prints what a save costs the run in each mode.
#   ./run/bench.sh --pipeline [--seq_len 512] [--batch 2] [--steps 3] [--repeat 3]
# trains with GPipe, 1F1B, Interleaved1F1B, ZBVZeroBubble and DualPipeV (the last three with 2
# stages per rank) at pp 2 and pp 4 (1 thread per stage process; pp 4 oversubscribes two
# cores) on the debug model with 8 layers split evenly, --batch micro-batches of one sequence
# per step (Interleaved1F1B needs a multiple of pp, DualPipeV at least 2·pp), and prints for
# each the tokens/s and the measured idle fraction (the most a stage rank waited for its neighbours over the step
# time, median step) next to the schedule's theoretical bubble, as the run's start-up prints it
# (common/train/pipeline_schedule.h has the formulas); then ZBVZeroBubble and DualPipeV at pp 2
# with 2 expert servers per pipeline rank: tokens/s and the share of the routed rows' time away
# hidden behind other compute (DualPipeV's pairs overlap there).
#   ./run/bench.sh --torchtitan [--seq_len 512] [--batch 2] [--steps 3] [--threads "1 2"] [--repeat 3]
#                  [--dtypes "float32 bfloat16"]
# runs the real peer: torchtitan's own DeepSeek-V3 model (the pinned commit) on a PyTorch 2.x
# from PyPI, eager and with torch.compile, fetched and installed once into a cache outside the
# tree (run/peer.sh), against dsv3's step (bench_step) on the same architecture, batch,
# sequence, optimizer and clipping, alternating, at each thread count; prints the median
# tokens/s of each, dsv3's ratio to the faster torchtitan variant, and at 2 threads also dsv3
# training as 1 process × 2 threads and as 2 processes × 1 thread (run/train.sh, data parallel;
# for an even --batch). Each dtype in turn: float32, then bfloat16 (dsv3's
# training.mixed_precision_param; torchtitan under torch.autocast) where the CPU has
# AVX512-BF16, with dsv3's bf16 speed-up over its fp32.
#   ./run/bench.sh --profile [--seq_len 512] [--batch 2] [--steps 3] [--threads "1 2"] [--dtypes ...]
# prints where dsv3's step spends its time (bench_step --profile), for each thread count and
# dtype: each op's milliseconds, share of the step and GEMM rate against the measured GEMM peak,
# then the GEMM shapes by time.
set -euo pipefail
source "$(dirname "$0")/common.sh"

seq_len=512 batch=2 steps=3 threads="1 2" repeat=3 fsdp=0 checkpoint=0 experts=0 pipeline=0 peer=0 profile=0
tensor=0
dtypes=float32
grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && dtypes="float32 bfloat16"
while [ $# -gt 0 ]; do
    case $1 in
    --fsdp | --checkpoint | --experts | --pipeline | --torchtitan | --profile | --tensor)
        case $1 in
        --fsdp) fsdp=1 ;; --checkpoint) checkpoint=1 ;; --experts) experts=1 ;; --pipeline) pipeline=1 ;;
        --profile) profile=1 ;; --tensor) tensor=1 ;;
        *) peer=1 ;;
        esac
        shift
        continue
        ;;
    --seq_len) seq_len=$2 ;;
    --batch) batch=$2 ;;
    --steps) steps=$2 ;;
    --threads) threads=$2 ;;
    --repeat) repeat=$2 ;;
    --dtypes) dtypes=$2 ;;
    *) dsv3_die "unknown option $1 (see the header of $0)" ;;
    esac
    shift 2
done

dsv3_ensure_packages "${DSV3_RUN_PACKAGES[@]}" "${DSV3_TEST_PACKAGES[@]}"
dsv3_ensure_venv
dsv3_ensure_build "$DSV3_BUILD_DIR" -Dcuda=auto
bench=$DSV3_BUILD_DIR/tests/bench/bench_step
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }

# layout_tps NAME NPROC THREADS [overrides...]: tokens/s of one training run of NAME (the
# median step after the first); its log stays in $work/NAME.log.
layout_tps() {
    local name=$1 nproc=$2 t=$3
    shift 3
    rm -rf "${work:?}/$name"
    CONFIG_FILE=$DSV3_ROOT/conf/debug_model.toml NPROC=$nproc OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t \
        BUILD_DIR=$DSV3_BUILD_DIR "$DSV3_ROOT/run/train.sh" --training.seq_len "$seq_len" \
        --training.global_batch_size "$batch" --training.steps $((steps + 1)) --metrics.log_freq 1 \
        --metrics.peak_tflops 1 --validation.enable false --job.dump_folder "$work/$name" "$@" \
        >"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; dsv3_die "the $name run failed"; }
    "$DSV3_VENV/bin/python" - "$work/$name/metrics.jsonl" "$((batch * seq_len))" <<'PY'
import json, statistics, sys
steps = [json.loads(line) for line in open(sys.argv[1])][1:]
print(f"{int(sys.argv[2]) / statistics.median(s['time_step'] for s in steps):.1f}")
PY
}

if [ $fsdp -eq 1 ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    one=0 dp=0 sharded=0
    for _ in $(seq "$repeat"); do
        one=$(best "$one" "$(layout_tps one 1 2 --training.local_batch_size "$batch")")
        dp=$(best "$dp" "$(layout_tps dp 2 1 --training.local_batch_size $((batch / 2)) \
            --parallelism.data_parallel_replicate_degree 2 --parallelism.data_parallel_shard_degree 1)")
        sharded=$(best "$sharded" "$(layout_tps fsdp 2 1 --training.local_batch_size $((batch / 2)))")
    done
    printf 'debug model, seq_len %s, %s sequences per step:
' "$seq_len" "$batch"
    printf '  1 process x 2 threads  %8.1f tokens/s
  DP 2 x 1 thread        %8.1f tokens/s
' "$one" "$dp"
    printf '  FSDP 2 x 1 thread      %8.1f tokens/s  (%.1f%% of DP 2)
' "$sharded" \
        "$(awk -v a="$sharded" -v b="$dp" 'BEGIN { print 100 * a / b }')"
    sed -n 's/.*\[stage \([0-9]*\)\] fsdp: /  FSDP rank \1 (last run): /p' "$work/fsdp.log"
    exit 0
fi

if [ $tensor -eq 1 ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    dp=0 tp=0 cp=0 ring=0
    for _ in $(seq "$repeat"); do
        dp=$(best "$dp" "$(layout_tps dp 2 1 --training.local_batch_size $((batch / 2)) \
            --parallelism.data_parallel_replicate_degree 2 --parallelism.data_parallel_shard_degree 1)")
        tp=$(best "$tp" "$(layout_tps tp 2 1 --training.local_batch_size "$batch" \
            --parallelism.tensor_parallel_degree 2)")
        cp=$(best "$cp" "$(layout_tps cp 2 1 --training.local_batch_size "$batch" \
            --parallelism.context_parallel_degree 2)")
        ring=$(best "$ring" "$(layout_tps ring 2 1 --training.local_batch_size "$batch" \
            --parallelism.context_parallel_degree 2 --parallelism.context_parallel_rotate_method alltoall)")
    done
    "$DSV3_VENV/bin/python" - "$work" "$seq_len" "$batch" "$dp" "$tp" "$cp" "$ring" <<'PY'
import json, statistics, sys
work, seq_len, batch = sys.argv[1:4]
dp, tp, cp, ring = map(float, sys.argv[4:8])
def comm(name, key):  # median seconds in the collectives, median step (last run)
    steps = [json.loads(line) for line in open(f"{work}/{name}/metrics.jsonl")][1:]
    return statistics.median(s[key] for s in steps), statistics.median(s["time_step"] for s in steps)
print(f"debug model, seq_len {seq_len}, {batch} sequences per step, 2 processes x 1 thread:")
print(f"  DP 2      {dp:8.1f} tokens/s")
for name, label, key, tps in (("tp", "TP 2", "tp", tp), ("cp", "CP 2", "cp", cp),
                              ("ring", "CP 2 ring", "cp", ring)):
    seconds, step = comm(name, f"time_comm_{key}")
    print(f"  {label:9} {tps:8.1f} tokens/s ({100 * tps / dp:.1f}% of DP 2); {key} collectives "
          f"{seconds:.3f} s of a {step:.3f} s step (last run)")
PY
    exit 0
fi

if [ $pipeline -eq 1 ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # 8 layers with the embedding and the head counted as none: every layout below splits them
    # evenly (the 6-layer debug model would leave rank 0 of a v with 2 layers and rank 1 with 4
    # at pp 2, and has too few layers for a v at pp 4), so the idle is the schedule's.
    balanced=(--model.n_layers 8 --parallelism.pipeline_parallel_first_stage_less_layers 0
        --parallelism.pipeline_parallel_last_stage_less_layers 0)
    printf 'debug model with 8 layers, seq_len %s, %s micro-batches of one sequence per step, 1 thread per stage:\n' \
        "$seq_len" "$batch"
    for pp in 2 4; do
        for schedule in GPipe 1F1B Interleaved1F1B ZBVZeroBubble DualPipeV; do
            name=${schedule}_$pp
            tps=0
            for _ in $(seq "$repeat"); do
                tps=$(best "$tps" "$(layout_tps "$name" "$pp" 1 --training.local_batch_size "$batch" \
                    --parallelism.pipeline_parallel_degree "$pp" \
                    --parallelism.pipeline_parallel_schedule "$schedule" "${balanced[@]}")")
            done
            "$DSV3_VENV/bin/python" - "$work/$name" "$schedule" "$pp" "$tps" <<'PY'
import json, re, statistics, sys
run, schedule, pp, tps = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
steps = [json.loads(line) for line in open(f"{run}/metrics.jsonl")][1:]
idle = statistics.median(s["time_pipeline_wait"] / s["time_step"] for s in steps)
bubble = re.search(r"theoretical bubble ([0-9.]+)%", open(f"{run}.log").read()).group(1)
print(f"  {schedule:15s} pp {pp}: {float(tps):8.1f} tokens/s, measured idle {100 * idle:5.1f}%, "
      f"theoretical bubble {float(bubble):5.1f}%")
PY
        done
    done
    # DualPipeV's pairs overlap where there is an exchange to hide: with expert servers, against
    # ZBVZeroBubble (the same v, no pairs: only the shared experts hide the rows' time away).
    printf 'the same at pp 2 with 2 expert servers per pipeline rank (6 processes):\n'
    for schedule in ZBVZeroBubble DualPipeV; do
        name=${schedule}_ep
        tps=0
        for _ in $(seq "$repeat"); do
            tps=$(best "$tps" "$(layout_tps "$name" 2 1 --training.local_batch_size "$batch" \
                --parallelism.pipeline_parallel_degree 2 --parallelism.expert_parallel_degree 2 \
                --parallelism.pipeline_parallel_schedule "$schedule" "${balanced[@]}")")
        done
        "$DSV3_VENV/bin/python" - "$work/$name" "$schedule" "$tps" <<'PY'
import json, statistics, sys
run, schedule, tps = sys.argv[1], sys.argv[2], sys.argv[3]
steps = [json.loads(line) for line in open(f"{run}/metrics.jsonl")][1:]
away = statistics.median(s["time_comm_experts"] for s in steps)
hidden = statistics.median(s["time_experts_hidden"] / s["time_comm_experts"] for s in steps)
exposed = statistics.median(s["time_comm_experts"] - s["time_experts_hidden"] for s in steps)
print(f"  {schedule:15s} pp 2: {float(tps):8.1f} tokens/s, routed rows away {away:.3f} s per "
      f"step, {100 * hidden:5.1f}% of it hidden behind other compute, {exposed:.3f} s waited "
      f"(last run, median step)")
PY
    done
    exit 0
fi

if [ $profile -eq 1 ]; then
    for dtype in $dtypes; do
        for t in $threads; do
            echo "debug model, $dtype, seq_len $seq_len, batch $batch, $t thread(s):"
            OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} \
                OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4} "$bench" --seq_len "$seq_len" \
                --batch "$batch" --steps "$steps" --threads "$t" --matmul "$dtype" --profile 1 |
                grep -v '^dsv3 peak_rss'
        done
    done
    exit 0
fi

if [ $peer -eq 1 ]; then
    source "$DSV3_ROOT/run/peer.sh"
    mkdir -p "$DSV3_CACHE"
    dsv3_ensure_torchtitan
    dsv3_ensure_peer_venv
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
    declare -A dsv3_tps
    for dtype in $dtypes; do
        printf 'debug model, %s, seq_len %s, batch %s, AdamW + clipping; torchtitan %s on PyTorch %s (median of %s alternating runs):\n' \
            "$dtype" "$seq_len" "$batch" "${DSV3_TORCHTITAN_COMMIT:0:12}" "$DSV3_TORCH_VERSION" "$repeat"
        for t in $threads; do
            export OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
            dsv3_blas_environment
            args=(--seq_len "$seq_len" --batch "$batch" --steps "$steps" --threads "$t")
            ours="" eager="" compiled="" one="" two=""
            for _ in $(seq "$repeat"); do
                ours+=" $("$bench" "${args[@]}" --matmul "$dtype" | sed -n 's/^dsv3 tokens_per_s=//p')"
                eager+=" $("$DSV3_PEER_VENV/bin/python" "$DSV3_ROOT/tests/bench/bench_torchtitan.py" \
                    --source "$DSV3_TORCHTITAN_DIR" "${args[@]}" --dtype "$dtype" 2>/dev/null |
                    sed -n 's/^torchtitan tokens_per_s=//p')"
                compiled+=" $("$DSV3_PEER_VENV/bin/python" "$DSV3_ROOT/tests/bench/bench_torchtitan.py" \
                    --source "$DSV3_TORCHTITAN_DIR" "${args[@]}" --dtype "$dtype" --compile 2>/dev/null |
                    sed -n 's/^torchtitan tokens_per_s=//p')"
                if [ "$t" -eq 2 ] && [ $((batch % 2)) -eq 0 ]; then
                    one+=" $(layout_tps one 1 2 --training.local_batch_size "$batch" \
                        --training.mixed_precision_param "$dtype")"
                    two+=" $(layout_tps dp 2 1 --training.local_batch_size $((batch / 2)) \
                        --parallelism.data_parallel_replicate_degree 2 --parallelism.data_parallel_shard_degree 1 \
                        --training.mixed_precision_param "$dtype")"
                fi
            done
            ours=$(median <<<"${ours# }") eager=$(median <<<"${eager# }") compiled=$(median <<<"${compiled# }")
            dsv3_tps[$dtype.$t]=$ours
            peer_best=$(best "$eager" "$compiled")
            printf '  threads %s: dsv3 %8.1f tokens/s; torchtitan eager %8.1f, compiled %8.1f; dsv3 / the faster %.2fx\n' \
                "$t" "$ours" "$eager" "$compiled" "$(awk -v a="$ours" -v b="$peer_best" 'BEGIN { print a / b }')"
            if [ -n "$one" ]; then
                printf '  dsv3 training (run/train.sh): 1 process x 2 threads %8.1f tokens/s, 2 processes x 1 thread %8.1f tokens/s\n' \
                    "$(median <<<"${one# }")" "$(median <<<"${two# }")"
            fi
        done
    done
    for t in $threads; do
        [ -n "${dsv3_tps[bfloat16.$t]:-}" ] && [ -n "${dsv3_tps[float32.$t]:-}" ] || continue
        printf 'dsv3 bf16 over fp32 at %s thread(s): %.2fx\n' "$t" \
            "$(awk -v a="${dsv3_tps[bfloat16.$t]}" -v b="${dsv3_tps[float32.$t]}" 'BEGIN { print a / b }')"
    done
    exit 0
fi

if [ $experts -eq 1 ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    local_tps=0 servers_tps=0
    for _ in $(seq "$repeat"); do
        local_tps=$(best "$local_tps" "$(layout_tps local 1 2 --training.local_batch_size "$batch")")
        servers_tps=$(best "$servers_tps" "$(layout_tps servers 1 1 --training.local_batch_size "$batch" \
            --parallelism.expert_parallel_degree 2)")
    done
    printf 'debug model, seq_len %s, %s sequences per step, two cores:\n' "$seq_len" "$batch"
    printf '  experts on the stage process (1 x 2 threads)          %8.1f tokens/s\n' "$local_tps"
    printf '  experts on 2 servers (stage + 2 servers, 1 thread each) %6.1f tokens/s  (%.2fx)\n' \
        "$servers_tps" "$(awk -v a="$servers_tps" -v b="$local_tps" 'BEGIN { print a / b }')"
    # Each server logs its bytes (requests and rows) and its rows' own bytes, in and out.
    sed -n 's/.*: \([0-9]*\) steps, .* exchanged (\([0-9]*\) bytes; the rows alone, in and out: \([0-9]*\)).*/\1 \2 \3/p' \
        "$work/servers.log" | awk '{ steps = $1; sent += $2; rows += $3 }
        END { printf "  bytes exchanged per step: %.3f MiB; theoretical minimum (tokens x top_k x MoE layers rows x dim x 4 B x 2 directions x 2 passes) %.3f MiB: %.3f%% above it (request headers)\n",
            sent / steps / 2^20, rows / steps / 2^20, 100 * (sent / rows - 1) }'
    exit 0
fi

if [ $checkpoint -eq 1 ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # run_seconds NAME [overrides...]: wall time of a 12-step run on one process, 2 threads.
    run_seconds() {
        local name=$1 t0
        shift
        rm -rf "${work:?}/$name"
        t0=$(date +%s.%N)
        CONFIG_FILE=$DSV3_ROOT/conf/debug_model.toml NPROC=1 OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 \
            BUILD_DIR=$DSV3_BUILD_DIR "$DSV3_ROOT/run/train.sh" --training.seq_len "$seq_len" \
            --training.local_batch_size "$batch" --training.steps 12 --validation.enable false \
            --metrics.peak_tflops 1 --checkpoint.interval 3 --checkpoint.last_save_model_only false \
            --job.dump_folder "$work/$name" "$@" >"$work/$name.log" 2>&1 ||
            { cat "$work/$name.log" >&2; dsv3_die "the $name run failed"; }
        awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }'
    }
    least() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == 0 || b < a ? b : a) }'; }
    none=0 sync=0 async=0
    for _ in $(seq "$repeat"); do
        none=$(least "$none" "$(run_seconds none --checkpoint.enable false)")
        sync=$(least "$sync" "$(run_seconds sync --checkpoint.enable true)")
        async=$(least "$async" "$(run_seconds async --checkpoint.enable true --checkpoint.async_mode async)")
    done
    size=$(du -sm "$work/sync/checkpoint/step-12" | cut -f1)
    # Four saves (steps 3, 6, 9, 12); the last is synchronous in both modes.
    awk -v n="$none" -v s="$sync" -v a="$async" -v mb="$size" -v sl="$seq_len" -v b="$batch" 'BEGIN {
        per = (s - n) / 4
        printf "debug model, seq_len %s, batch %s, 12 steps, a full checkpoint (%d MB) every 3 steps:\n", sl, b, mb
        printf "  no checkpoints      %6.2f s\n", n
        printf "  synchronous saves   %6.2f s  (%.2f s per save)\n", s, per
        printf "  background saves    %6.2f s  (%.2f s per save before the last)\n", a, (a - n - per) / 3
    }'
    exit 0
fi

for t in $threads; do
    export OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
    dsv3_blas_environment
    args=(--seq_len "$seq_len" --batch "$batch" --steps "$steps" --threads "$t")
    ours_tps=0 theirs_tps=0
    for _ in $(seq "$repeat"); do
        ours=$("$bench" "${args[@]}")
        # Debian's torch calls OpenBLAS too: the same kernels as dsv3 (which picks better ones
        # where OpenBLAS does not recognise the CPU).
        theirs=$(OPENBLAS_CORETYPE=$(sed -n 's/^dsv3 blas_kernels=//p' <<<"$ours") \
            "$DSV3_VENV/bin/python" "$DSV3_ROOT/tests/reference/bench_torch.py" "${args[@]}")
        ours_tps=$(best "$ours_tps" "$(sed -n 's/^dsv3 tokens_per_s=//p' <<<"$ours")")
        theirs_tps=$(best "$theirs_tps" "$(sed -n 's/^torch tokens_per_s=//p' <<<"$theirs")")
    done
    ratio=$(awk -v a="$ours_tps" -v b="$theirs_tps" 'BEGIN { printf "%.2f", a / b }')
    printf 'threads %s  seq_len %s  batch %s:  dsv3 %s tokens/s  torch %s tokens/s  ratio %s×\n' \
        "$t" "$seq_len" "$batch" "$ours_tps" "$theirs_tps" "$ratio"
    sed -n 's/^dsv3 peak_rss_mib=/  dsv3 peak RSS MiB=/p' <<<"$ours"
done
