#!/usr/bin/env bash
# Training-step throughput of dsv3 against PyTorch running the same model, side by side, in one
# run: torchtitan's debugmodel architecture, the same batch and seq_len, threads pinned equal
# (OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = torch threads). Prints tokens/s of each and the
# ratio, and dsv3's peak RSS against parameters + gradients + AdamW state + activations.
#   ./run/bench.sh [--seq_len 512] [--batch 2] [--steps 3] [--threads "1 2"] [--repeat 3]
# Each side runs --repeat times, alternating, and its best run counts, so that a busy machine
# slows neither side more than the other.
set -euo pipefail
source "$(dirname "$0")/common.sh"

seq_len=512 batch=2 steps=3 threads="1 2" repeat=3
while [ $# -gt 0 ]; do
    case $1 in
    --seq_len) seq_len=$2 ;;
    --batch) batch=$2 ;;
    --steps) steps=$2 ;;
    --threads) threads=$2 ;;
    --repeat) repeat=$2 ;;
    *) dsv3_die "unknown option $1 (see the header of $0)" ;;
    esac
    shift 2
done

dsv3_ensure_packages "${DSV3_RUN_PACKAGES[@]}" "${DSV3_TEST_PACKAGES[@]}"
dsv3_ensure_venv
dsv3_ensure_build "$DSV3_BUILD_DIR" -Dcuda=auto
bench=$DSV3_BUILD_DIR/tests/bench/bench_step
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }

for t in $threads; do
    export OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
    args=(--seq_len "$seq_len" --batch "$batch" --steps "$steps" --threads "$t")
    ours_tps=0 theirs_tps=0
    for _ in $(seq "$repeat"); do
        ours=$("$bench" "${args[@]}")
        theirs=$("$DSV3_VENV/bin/python" "$DSV3_ROOT/tests/reference/bench_torch.py" "${args[@]}")
        ours_tps=$(best "$ours_tps" "$(sed -n 's/^dsv3 tokens_per_s=//p' <<<"$ours")")
        theirs_tps=$(best "$theirs_tps" "$(sed -n 's/^torch tokens_per_s=//p' <<<"$theirs")")
    done
    ratio=$(awk -v a="$ours_tps" -v b="$theirs_tps" 'BEGIN { printf "%.2f", a / b }')
    printf 'threads %s  seq_len %s  batch %s:  dsv3 %s tokens/s  torch %s tokens/s  ratio %s×\n' \
        "$t" "$seq_len" "$batch" "$ours_tps" "$theirs_tps" "$ratio"
    sed -n 's/^dsv3 peak_rss_mib=/  dsv3 peak RSS MiB=/p' <<<"$ours"
done
