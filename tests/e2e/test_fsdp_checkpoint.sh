#!/usr/bin/env bash
# Checkpoints across layouts: a checkpoint saved at dp_shard 4 resumes at dp_shard 2, at HSDP
# 2 × 2 and on one process, and one saved on one process resumes at dp_shard 4; each continues
# with the losses of the straight one-process run (≤ 1e-5 relative), so model and optimizer
# state both came back. The model has shapes FSDP must pad (a vocabulary of 250 rows over 4
# ranks, 6 experts over 4 ranks: the last holds none). Every tensor is one global-shape dataset
# that h5py reads whole, equal to the one-process checkpoint's, whatever layout wrote it (HSDP:
# the first replica only).
source "$(dirname "$0")/lib.sh"
SMALL=(--job.config_file "$CONF/debug_model.toml" --model.dim 64 --model.n_layers 3 --model.n_dense_layers 1
    --model.vocab_size 250 --model.n_heads 2 --model.inter_dim 128 --model.moe_inter_dim 32 --model.num_experts 6
    --model.top_k 2 --model.kv_lora_rank 16 --model.qk_nope_head_dim 16 --model.qk_rope_head_dim 8
    --model.v_head_dim 16 --training.seq_len 32 --training.global_batch_size 4 --training.steps 10
    --metrics.log_freq 1 --metrics.peak_tflops 1 --lr_scheduler.warmup_steps 3 --validation.enable false
    --checkpoint.enable --checkpoint.interval 5 --checkpoint.last_save_model_only false)

# train NAME NPROC [overrides...]: a run into $WORK/NAME with NPROC stage ranks.
train() {
    local name=$1 nproc=$2
    shift 2
    "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${SMALL[@]}" --job.dump_folder "$WORK/$name" "$@" \
        : -n "$nproc" "$BIN/dsv3-stage" >"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out"; fail "$name failed"; }
}

# resume NAME FROM NPROC [overrides...]: FROM's step-5 copied into a new run that goes on to 10.
resume() {
    local name=$1 from=$2
    shift 2
    mkdir -p "$WORK/$name/checkpoint"
    cp -r "$WORK/$from/checkpoint/step-5" "$WORK/$name/checkpoint/"
    train "$name" "$@"
    expect_in "$WORK/$name.out" "resumed from $WORK/$name/checkpoint/step-5"
}

train one 1 --training.local_batch_size 4
train dp4 4 --training.local_batch_size 1
resume dp4_to_dp2 dp4 2 --training.local_batch_size 2
resume dp4_to_hsdp dp4 4 --training.local_batch_size 1 --parallelism.data_parallel_replicate_degree 2
resume dp4_to_one dp4 1 --training.local_batch_size 4
resume one_to_dp4 one 4 --training.local_batch_size 1

python3 - "$WORK" <<'PY' || fail "a resumed layout disagrees with the straight run"
import json, sys
import numpy as np
from ckpt_tensors import checkpoint_tensors

TOL = 1e-5
work = sys.argv[1]

def losses(name):
    out = {}
    for line in open(f"{work}/{name}/metrics.jsonl"):
        r = json.loads(line)
        out[r["step"]] = r["loss"]
    return out

one = losses("one")
assert sorted(one) == list(range(1, 11)), sorted(one)
for name in ("dp4", "dp4_to_dp2", "dp4_to_hsdp", "dp4_to_one", "one_to_dp4"):
    got = losses(name)
    steps = sorted(got)
    assert steps == (list(range(1, 11)) if name == "dp4" else list(range(6, 11))), (name, steps)
    worst = max(abs(got[s] - one[s]) / abs(one[s]) for s in steps)
    print(f"{name}: steps {steps[0]}-{steps[-1]}, worst relative loss difference {worst:.1e}")
    assert worst <= TOL, (name, worst)

def tensors(name, step):
    return checkpoint_tensors(f"{work}/{name}/checkpoint/step-{step}")

# Whole tensors, written by each layout, against the one-process checkpoint of the same step.
for name, step in (("dp4", 5), ("dp4_to_hsdp", 10), ("dp4_to_dp2", 10), ("one_to_dp4", 10)):
    ref, got = tensors("one", step), tensors(name, step)
    assert sorted(got) == sorted(ref), (name, set(got) ^ set(ref))
    worst = 0.0
    for key, b in ref.items():
        a = got[key]
        assert a.shape == b.shape, (name, key, a.shape, b.shape)
        scale = float(np.linalg.norm(b.astype(np.float64)))
        if scale > 0:
            worst = max(worst, float(np.linalg.norm(a.astype(np.float64) - b)) / scale)
    print(f"{name} step-{step}: {len(ref)} datasets read whole, worst relative difference {worst:.1e}")
    assert worst <= TOL, (name, worst)
PY
echo "fsdp checkpoint: ok"
