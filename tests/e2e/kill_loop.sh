#!/usr/bin/env bash
# Kill loop: one run directory, TRIALS times in a row a job is started (resuming from its latest
# checkpoint) and one of its processes, the coordinator, a stage rank or an expert server chosen at random, is
# SIGKILLed at a random moment (start-up, load, step or save); then the job runs to the end. After every kill each committed
# checkpoint folder is whole (every file of its manifest with its size and CRC-32) and at most
# keep_latest_k of them exist; at the end every step's loss, grad norm and LR (the last logged
# value of each step) equal an uninterrupted run's bit for bit.
#
#   kill_loop.sh [TRIALS [SEED [OVERRIDES...]]]   (defaults 20 and 1; the e2e suite runs short
#                                                  loops, with synchronous and background saves)
# EXPERT_SERVERS=N adds N expert servers to the job (expert_parallel_degree N), which may be
# killed too.
source "$(dirname "$0")/lib.sh"
trials=${1:-20}
RANDOM=${2:-1}
shift $(($# < 2 ? $# : 2))
SMALL=("${SMALL_MODEL[@]}" --training.steps 600 --metrics.log_freq 1
    --lr_scheduler.warmup_steps 3 --checkpoint.enable --checkpoint.interval 10 --checkpoint.keep_latest_k 2
    --checkpoint.last_save_model_only false "$@")
RANKS=(: -n 2 "$BIN/dsv3-stage")
if [ "${EXPERT_SERVERS:-0}" -gt 0 ]; then
    SMALL+=(--parallelism.expert_parallel_degree "$EXPERT_SERVERS")
    RANKS+=(: -n "$EXPERT_SERVERS" "$BIN/dsv3-expert")
fi

# start DIR: the job in the background (1 coordinator + 2 stage ranks [+ expert servers]); sets
# pid (the timeout's, whose child is mpiexec, whose children are the ranks).
start() {
    "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${SMALL[@]}" --job.dump_folder "$1" "${RANKS[@]}" >>"$1.out" 2>&1 &
    pid=$!
}

lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

# whole ROOT KEEP: every committed step-N folder has every file of its manifest, with its size
# and CRC-32, and there are at most KEEP + 1 of them (the one resumed from is never removed).
whole() {
    python3 - "$1" "$2" <<'PY' || fail "a committed checkpoint is not whole (above)"
import json, os, sys, zlib
root, keep = sys.argv[1], int(sys.argv[2])
folders = sorted(d for d in os.listdir(root) if d.startswith("step-") and not d.endswith(".tmp")) if os.path.isdir(root) else []
for d in folders:
    m = json.load(open(os.path.join(root, d, "manifest.json")))
    for f in m["files"]:
        path = os.path.join(root, d, f["path"])
        data = open(path, "rb").read()
        assert len(data) == f["bytes"], (path, len(data), f["bytes"])
        assert zlib.crc32(data) == f["crc32"], path
assert len(folders) <= keep + 1, folders
PY
}

"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${SMALL[@]}" --checkpoint.enable false --job.dump_folder "$WORK/straight" \
    "${RANKS[@]}" >"$WORK/straight.out" 2>&1 || { cat "$WORK/straight.out"; fail "uninterrupted run"; }

dir=$WORK/killed
killed=0
for trial in $(seq "$trials"); do
    # The moment: after 0 to 24 more logged steps (0: during start-up or the load), plus up to
    # 90 ms, so that kills land in start-up, loads, steps and saves.
    logged=$(lines "$dir/metrics.jsonl")
    more=$((RANDOM % 25))
    start "$dir"
    for _ in $(seq 3000); do
        [ "$(lines "$dir/metrics.jsonl")" -ge $((logged + more)) ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    sleep "0.0$((RANDOM % 10))"
    launcher=$(pgrep -P "$pid" -x mpiexec || true)
    victims=($([ -z "$launcher" ] || pgrep -P "$launcher" || true))
    if [ ${#victims[@]} -gt 0 ]; then
        victim=${victims[$((RANDOM % ${#victims[@]}))]}
        kill -KILL "$victim" 2>/dev/null && killed=$((killed + 1))
    fi
    wait "$pid" || true
    whole "$dir/checkpoint" 2
    steps=$(python3 -c 'import json,sys; print(max((json.loads(l)["step"] for l in open(sys.argv[1])), default=0))' "$dir/metrics.jsonl" 2>/dev/null || echo 0)
    echo "trial $trial: $(ls "$dir/checkpoint" 2>/dev/null | tr '\n' ' ')(steps logged up to $steps)"
done
start "$dir"
wait "$pid" || { tail -20 "$dir.out"; fail "the last run after the kills"; }
whole "$dir/checkpoint" 2
same_steps "$WORK/straight" "$dir" 1 600
echo "$killed processes killed"
echo "kill loop: ok"
