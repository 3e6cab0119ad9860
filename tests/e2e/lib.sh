# Shared by the e2e tests: paths, the MPI environment, and small assertions.
# Every test runs the real executables from the meson build under mpiexec on loopback.
set -euo pipefail
: "${DSV3_SOURCE_ROOT:?run through meson test}" "${DSV3_BUILD_ROOT:?run through meson test}"
BIN=$DSV3_BUILD_ROOT/roles
CONF=$DSV3_SOURCE_ROOT/conf
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Test scripts' Python finds the helpers here (ckpt_tensors.py).
export PYTHONPATH=$DSV3_SOURCE_ROOT/tests/e2e${PYTHONPATH:+:$PYTHONPATH}
# Every launch is bounded: a hang is a failure, not a stuck CI.
MPIRUN=(timeout 120 mpiexec --oversubscribe)

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_in FILE TEXT: the file contains the fixed string.
expect_in() { grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "expected '$2' in the output"; }; }

# expect_count FILE TEXT N: the fixed string occurs on exactly N lines.
expect_count() {
    local n
    n=$(grep -cF -- "$2" "$1" || true)
    [ "$n" -eq "$3" ] || { cat "$1" >&2; fail "expected $3 lines with '$2', found $n"; }
}

# run_expect_fail OUT CMD...: the command fails (non-zero, not a timeout) with output in OUT.
run_expect_fail() {
    local out=$1 rc=0
    shift
    "$@" >"$out" 2>&1 || rc=$?
    [ $rc -ne 0 ] || { cat "$out" >&2; fail "expected a non-zero exit from: $*"; }
    [ $rc -ne 124 ] || { cat "$out" >&2; fail "timed out (hang) instead of failing: $*"; }
}

# A small model (155,120 parameters) on 32-token sequences, 2 per micro-batch: end-to-end runs of
# many steps in seconds.
SMALL_MODEL=(--model.dim 64 --model.n_layers 3 --model.n_dense_layers 1 --model.vocab_size 256 --model.n_heads 2
    --model.inter_dim 128 --model.moe_inter_dim 32 --model.num_experts 4 --model.top_k 2 --model.kv_lora_rank 16
    --model.qk_nope_head_dim 16 --model.qk_rope_head_dim 8 --model.v_head_dim 16
    --training.seq_len 32 --training.local_batch_size 2)

# close_losses A B TOL [ABOVE]: runs A and B logged the same steps, and each loss of B is within
# TOL of A's, relative (and, with ABOVE, the worst difference is above it: the runs differ).
close_losses() {
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" "${4:--1}" <<'PY' || fail "the losses of $2 are not within $3 of $1's"
import json, sys
a, b = ({r["step"]: r["loss"] for r in map(json.loads, open(p))} for p in sys.argv[1:3])
tol, above = float(sys.argv[3]), float(sys.argv[4])
assert a and sorted(a) == sorted(b), (sorted(a), sorted(b))
worst = max(abs(b[s] - a[s]) / abs(a[s]) for s in a)
print(f"{sys.argv[2]}: losses of {len(a)} steps within {worst:.2e} of {sys.argv[1]}'s")
assert above < worst <= tol, worst
PY
}

# same_steps A B FIRST LAST: both runs logged every step 1..LAST (metrics.jsonl, log_freq 1), and
# steps FIRST..LAST of B — its last line of each step, when it was stopped and resumed — have
# A's loss, grad norm and LR bit for bit.
same_steps() {
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" "$4" <<'PY' || fail "steps $3-$4 of $2 differ from $1"
import json, sys
def steps(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        out[r["step"]] = (r["loss"], r["grad_norm"], r["lr"])
    return out
a, b = steps(sys.argv[1]), steps(sys.argv[2])
first, last = int(sys.argv[3]), int(sys.argv[4])
assert sorted(a) == sorted(b) == list(range(1, last + 1)), (len(a), len(b))
diff = [(s, a[s], b[s]) for s in range(first, last + 1) if a[s] != b[s]]
assert not diff, diff[:3]
print(f"{sys.argv[2]}: steps {first}-{last} identical to {sys.argv[1]}")
PY
}

# train_stages NAME NPROC [overrides...]: a training run with the caller's COMMON arguments into
# $WORK/NAME on NPROC stage ranks (and EXPERT_SERVERS expert servers when that is set), its
# output in $WORK/NAME.out; every stage rank logs its peak memory against its plan.
train_stages() {
    local name=$1 nproc=$2 servers=() status=0
    shift 2
    [ -z "${EXPERT_SERVERS:-}" ] || servers=(: -n "$EXPERT_SERVERS" "$BIN/dsv3-expert")
    local job=("${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${COMMON[@]}" --job.dump_folder "$WORK/$name"
        "$@" : -n "$nproc" "$BIN/dsv3-stage" "${servers[@]}")
    "${job[@]}" >"$WORK/$name.out" 2>&1 || status=$?
    # Open MPI's mpiexec itself sometimes dies on a signal on a loaded machine before any rank
    # has started (nothing of ours in the output): that launch is retried once, saying so.
    if [ $status -gt 128 ] && [ $status -ne 137 ] && ! grep -q '^\[' "$WORK/$name.out"; then
        echo "$name: mpiexec ended on signal $((status - 128)) before any rank started; retrying once"
        status=0
        "${job[@]}" >"$WORK/$name.out" 2>&1 || status=$?
    fi
    [ $status -eq 0 ] || { cat "$WORK/$name.out"; fail "$name failed"; }
    expect_count "$WORK/$name.out" "memory: peak " "$nproc"
}

# peaks NAME: every rank's measured and planned peak bytes, one "measured planned" line each.
peaks() { sed -n 's/.*memory: peak \([0-9]*\) bytes .*planned \([0-9]*\) bytes.*/\1 \2/p' "$WORK/$1.out"; }

# check_peaks NAME...: every stage rank of each run peaked within 10% of its plan.
check_peaks() {
    local name
    for name; do
        peaks "$name" | awk -v run="$name" '{ r = $1 / $2; printf "%s: peak %.2f MiB, plan %.2f MiB (%.2f%%)\n", run, $1 / 2^20, $2 / 2^20, 100 * r;
            if (r < 0.9 || r > 1.1) bad = 1 } END { exit bad }' || fail "$name: a rank's peak is not within 10% of its plan"
    done
}

# make_text_corpus: a small tokenizer in $WORK/tok and a text corpus of short documents in
# $WORK/corpus (several per 32-token window, so that block-causal masks differ from causal
# ones and documents cross the chunks of pipeline stages and context-parallel ranks); TEXT
# holds the overrides that train on them with block-causal masks.
make_text_corpus() {
    python3 "$DSV3_SOURCE_ROOT/tests/e2e/make_tokenizer.py" "$WORK/tok"
    mkdir -p "$WORK/corpus"
    python3 - "$WORK/corpus" <<'PY'
import random, sys
rng = random.Random(1)
words = "the cat sat on a mat and then ran into the garden where it slept".split()
with open(f"{sys.argv[1]}/a.txt", "w") as f:
    for _ in range(400): f.write(" ".join(rng.choice(words) for _ in range(rng.randint(2, 9))) + "\n")
PY
    TEXT=(--model.attn_mask_type block_causal --model.hf_assets_path "$WORK/tok" --training.dataset text
        --training.dataset_path "$WORK/corpus")
}

# resume_from NAME SOURCE NPROC [overrides...]: run NAME (its own layout) starts from run
# SOURCE's step-5 checkpoint and says it resumed from it.
resume_from() {
    local name=$1 source=$2 nproc=$3
    shift 3
    mkdir -p "$WORK/$name/checkpoint"
    cp -r "$WORK/$source/checkpoint/step-5" "$WORK/$name/checkpoint/"
    train_stages "$name" "$nproc" "$@"
    expect_in "$WORK/$name.out" "checkpoint: resumed from $WORK/$name/checkpoint/step-5"
}
