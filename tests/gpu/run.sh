#!/usr/bin/env bash
# The GPU check: what verifies dsv3's CUDA work, in one call on a machine with an NVIDIA GPU
# (sized for 8 minutes on one H100 or H200 with 16 cores):
#   1. configures and builds GPU_BUILD_DIR (default build-gpu) with the CUDA backend
#      (-Dcuda=enabled -Dnative=true; CUDA 13 with cuBLASLt, under CUDA_HOME or /usr/local/cuda);
#   2. runs the cuda test suite: every CUDA op against the reference CPU backend;
#   3. trains the debug model 20 steps in bf16 on the GPU, where the trainer accepts
#      training.device (until the stage runtime has a CUDA path it says the run is not available);
#   4. runs the op benchmark, tests/bench/bench_cuda, with its default sizes;
#   5. prints one summary: the GPU, each cuda test's result, the training run's status, the
#      benchmark's lines and each part's wall time.
#
#   tests/gpu/run.sh [LOG_DIR]          LOG_DIR defaults to GPU_BUILD_DIR/gpu-check
#
# Everything printed also goes to LOG_DIR/gpu-check.log, beside the suite's testlog.json, the
# benchmark's and the training run's output. With DSV3_DEPS_PREFIX naming an unpacked
# run/pack_deps.sh bundle the build uses it (nodes without package access); without it
# run/common.sh installs what is missing with apt-get. Exits 1 if a part failed, or if the tests
# or the benchmark skipped although nvidia-smi sees a GPU. Without a GPU they skip (exit 77) and
# the check passes on the build alone.
set -euo pipefail
source "$(dirname "$0")/../../run/common.sh"

GPU_BUILD_DIR=$(realpath -m "${GPU_BUILD_DIR:-$DSV3_ROOT/build-gpu}")
LOG_DIR=$(realpath -m "${1:-$GPU_BUILD_DIR/gpu-check}")
SKIPPED=77 # a cuda test's or the benchmark's exit status without a CUDA device
# Bounds on the benchmark and the training run: a hang ends the part, not the whole check.
BENCH_TIMEOUT_S=300
TRAIN_TIMEOUT_S=300
TRAIN_STEPS=20

summary=()      # the summary's lines, part after part
failures=()     # the parts that failed
part_status=    # set by each part: one word or phrase for its summary line
part_details=() # ... and the lines under it

# Whether nvidia-smi sees a GPU.
gpu_visible() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }

# One line per GPU (name, memory, driver, compute capability), or why there is none.
gpu_description() {
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "no nvidia-smi"
    elif ! gpu_visible; then
        echo "nvidia-smi sees no GPU"
    else
        nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null ||
            nvidia-smi -L
    fi
}

# nvcc's version line, from PATH, CUDA_HOME or the default CUDA root.
cuda_description() {
    local nvcc
    nvcc=$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")
    if [ -x "$nvcc" ]; then "$nvcc" --version | grep release; else echo "no nvcc"; fi
}

# Runs one part and adds its summary lines: run_part TITLE FUNCTION
run_part() {
    local title=$1 start=$SECONDS status=0
    shift
    dsv3_log "---- $title"
    part_status=ok
    part_details=()
    "$@" || status=$?
    if [ $status -ne 0 ]; then
        failures+=("$title")
        dsv3_log "error: $title: $part_status" >&2
    fi
    summary+=("$(printf '%-13s %s (%d s)' "$title:" "$part_status" $((SECONDS - start)))")
    summary+=("${part_details[@]/#/    }")
    return 0
}

# 1. The build, configured once (an existing folder gets the GPU options again).
build_gpu() {
    local options=(-Dcuda=enabled -Dnative=true) packages=(libcmocka-dev) p
    [ -z "${CUDA_HOME:-}" ] || options+=(-Dcudaroot="$CUDA_HOME")
    # The build's packages; not make, which no step runs and GPU nodes may lack.
    for p in "${DSV3_RUN_PACKAGES[@]}"; do [ "$p" = make ] || packages+=("$p"); done
    # In a subshell: a missing package or a failed build (dsv3_die) ends the part, not the check.
    (dsv3_ensure_packages "${packages[@]}" &&
        { [ ! -f "$GPU_BUILD_DIR/build.ninja" ] || meson configure "$GPU_BUILD_DIR" "${options[@]}"; } &&
        dsv3_ensure_build "$GPU_BUILD_DIR" "${options[@]}") || {
        part_status=FAILED
        return 1
    }
}

# 2. The cuda suite; its results, one line a test, from meson's testlog.json.
cuda_tests() {
    local rc=0 testlog=$LOG_DIR/cuda-testlog.json counts
    rm -f "$GPU_BUILD_DIR/meson-logs/testlog.json" "$testlog"
    meson test -C "$GPU_BUILD_DIR" --suite cuda --print-errorlogs || rc=$?
    if ! cp "$GPU_BUILD_DIR/meson-logs/testlog.json" "$testlog" 2>/dev/null || [ ! -s "$testlog" ]; then
        part_status="FAILED: no cuda test ran (meson test exit status $rc)"
        return 1
    fi
    mapfile -t part_details < <(python3 - "$testlog" <<'PY'
import json, re, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
for line in open(sys.argv[1]):
    test = json.loads(line)
    result = test["result"]
    counts[{"OK": "passed", "SKIP": "skipped"}.get(result, "failed")] += 1
    name = re.split("[:/]", test["name"])[-1].strip()  # "dsv3:cuda / cuda_x", "cuda - dsv3:cuda_x"
    print(f"{name:<24} {result:<8} {test['duration']:6.1f} s")
print(", ".join(f"{n} {kind}" for kind, n in counts.items()))
PY
    )
    counts=${part_details[-1]}
    unset 'part_details[-1]'
    part_status=$counts
    if [ $rc -ne 0 ]; then
        part_status="FAILED: $counts"
        return 1
    elif [[ $counts == "0 passed, 0 failed,"* ]] && gpu_visible; then
        part_status="FAILED: every test skipped although nvidia-smi sees a GPU"
        return 1
    fi
}

# Whether the built trainer accepts training.device (tests/unit/print_config_keys lists the
# config schema: key, status, values).
trainer_accepts_device() {
    "$GPU_BUILD_DIR/tests/unit/print_config_keys" | grep -q "^training\.device	supported	"
}

# 3. The debug model, TRAIN_STEPS steps in bf16 on the GPU: one stage rank.
training_run() {
    if ! trainer_accepts_device; then
        part_status="not available (the stage runtime has no CUDA path yet)"
        echo "training run: $part_status"
        return 0
    fi
    local rc=0
    BUILD_DIR=$GPU_BUILD_DIR DSV3_PREBUILT=1 NPROC=1 timeout $TRAIN_TIMEOUT_S "$DSV3_ROOT/run/train.sh" \
        --training.device cuda --training.mixed_precision_param bfloat16 --training.steps $TRAIN_STEPS \
        --job.dump_folder "$LOG_DIR/train" 2>&1 | tee "$LOG_DIR/train.log" || rc=$?
    mapfile -t part_details < <(grep -E 'step +[0-9]+ +loss|final held-out loss' "$LOG_DIR/train.log" | tail -3)
    if [ $rc -ne 0 ]; then
        part_status="FAILED (exit status $rc)"
        return 1
    fi
}

# 4. The op benchmark, default sizes.
benchmark() {
    local rc=0
    timeout $BENCH_TIMEOUT_S "$GPU_BUILD_DIR/tests/bench/bench_cuda" 2>&1 | tee "$LOG_DIR/bench_cuda.log" || rc=$?
    mapfile -t part_details < <(grep '^bench_cuda ' "$LOG_DIR/bench_cuda.log")
    if [ $rc -eq $SKIPPED ] && gpu_visible; then
        part_status="FAILED: skipped although nvidia-smi sees a GPU"
        return 1
    elif [ $rc -eq $SKIPPED ]; then
        part_status="skipped (no CUDA device)"
    elif [ $rc -ne 0 ]; then
        part_status="FAILED (exit status $rc$([ $rc -ne 124 ] || echo ": over ${BENCH_TIMEOUT_S} s"))"
        return 1
    fi
}

print_summary() {
    local failed
    printf -v failed '%s, ' "${failures[@]}"
    echo
    echo "==== GPU check summary ===="
    printf '%-13s %s\n' "GPU:" "$(gpu_description | paste -sd';')" "CUDA:" "$(cuda_description)" \
        "build dir:" "$GPU_BUILD_DIR" "logs:" "$LOG_DIR"
    printf '%s\n' "${summary[@]}"
    printf '%-13s %d s\n' "total:" $SECONDS
    if [ ${#failures[@]} -eq 0 ]; then
        printf '%-13s %s\n' "result:" "PASSED"
    else
        printf '%-13s %s\n' "result:" "FAILED (${failed%, })"
    fi
}

main() {
    dsv3_log "GPU: $(gpu_description | paste -sd';')"
    run_part build build_gpu
    if [ ${#failures[@]} -eq 0 ]; then
        run_part "cuda tests" cuda_tests
        run_part "training run" training_run
        run_part benchmark benchmark
    fi
    print_summary
    [ ${#failures[@]} -eq 0 ]
}

mkdir -p "$LOG_DIR"
main 2>&1 | tee "$LOG_DIR/gpu-check.log"
