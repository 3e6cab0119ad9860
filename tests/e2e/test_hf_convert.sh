#!/usr/bin/env bash
# HF conversion end to end against checkpoints the Python `safetensors` package wrote from the
# PyTorch reference (tests/reference/hf_case.py): F32, BF16 and FP8 with block scales convert
# (run/convert_from_hf.sh) and load (checkpoint.initial_load_path), and the first step's loss
# is the reference's within 1e-5 relative; initial_load_in_hf loads the folders directly with
# the same loss; HF -> dsv3 -> HF (run/convert_to_hf.sh) gives back every tensor bit for bit;
# a model that does not fit is named with both shapes.
source "$(dirname "$0")/lib.sh"
export BUILD_DIR=$DSV3_BUILD_ROOT
case=$WORK/case
python3 "$DSV3_SOURCE_ROOT/tests/reference/hf_case.py" "$case" >"$WORK/case.out" 2>&1 ||
    { cat "$WORK/case.out"; fail "hf_case.py"; }
read -r -a model <<<"$(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["model_args"]))' "$case/expected.json")"
from_hf=$DSV3_SOURCE_ROOT/run/convert_from_hf.sh
to_hf=$DSV3_SOURCE_ROOT/run/convert_to_hf.sh

# step1 NAME LOAD-OVERRIDES...: one training step on the case's tokens; checks its loss.
step1() {
    local name=$1 variant=$2
    shift 2
    "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" --job.config_file "$CONF/debug_model.toml" "${model[@]}" \
        --training.seq_len 32 --training.local_batch_size 2 --training.global_batch_size 4 --training.steps 1 \
        --training.dataset tokens --training.dataset_path "$case/tokens.bin" --job.dump_folder "$WORK/$name" "$@" \
        : -n 1 "$BIN/dsv3-stage" >"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out"; fail "$name: training failed"; }
    python3 - "$case/expected.json" "$variant" "$WORK/$name/metrics.jsonl" "$name" <<'PY' || fail "$name: step-1 loss"
import json, sys
want = json.load(open(sys.argv[1]))["losses"][sys.argv[2]]
got = json.loads(open(sys.argv[3]).readline())["loss"]
rel = abs(got - want) / abs(want)
print(f"{sys.argv[4]}: step-1 loss {got:.9g}, reference {want:.9g}, relative error {rel:.1e}")
assert rel <= 1e-5, rel
PY
}

for v in f32 bf16 fp8; do
    "$from_hf" "$case/hf_$v" "$WORK/dsv3_$v" --model_flavor debugmodel "${model[@]}" >"$WORK/conv_$v.out" 2>&1 ||
        { cat "$WORK/conv_$v.out"; fail "convert_from_hf $v"; }
    step1 "load_$v" "hf_$v" --checkpoint.initial_load_path "$WORK/dsv3_$v"
done
for v in f32 fp8; do
    step1 "direct_$v" "hf_$v" --checkpoint.initial_load_path "$case/hf_$v" --checkpoint.initial_load_in_hf
done

# HF -> dsv3 -> HF, bit for bit (F32 as F32, BF16 as BF16), with small shards.
"$to_hf" "$WORK/dsv3_f32" "$WORK/back_f32" --max_shard_bytes 100000 >"$WORK/back_f32.out" 2>&1 ||
    { cat "$WORK/back_f32.out"; fail "convert_to_hf f32"; }
"$to_hf" "$WORK/dsv3_bf16" "$WORK/back_bf16" --checkpoint.export_dtype bfloat16 >"$WORK/back_bf16.out" 2>&1 ||
    { cat "$WORK/back_bf16.out"; fail "convert_to_hf bf16"; }
python3 - "$case" "$WORK" <<'PY' || fail "HF round trip"
import json, os, struct, sys
from safetensors import safe_open
def tensors(folder):
    """{name: (dtype, shape, raw bytes)} over every file of an HF folder."""
    index = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    out = {}
    for f in files:
        path = os.path.join(folder, f)
        with safe_open(path, "numpy") as h:  # the package must accept our files
            names = set(h.keys())
        blob = open(path, "rb").read()
        n = struct.unpack("<Q", blob[:8])[0]
        header = json.loads(blob[8:8 + n])
        header.pop("__metadata__", None)
        assert set(header) == names
        for k, v in header.items():
            b, e = v["data_offsets"]
            out[k] = (v["dtype"], v["shape"], blob[8 + n + b:8 + n + e])
    return out
case, work = sys.argv[1], sys.argv[2]
for v in ("f32", "bf16"):
    a, b = tensors(f"{case}/hf_{v}"), tensors(f"{work}/back_{v}")
    assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))
    diff = [k for k in a if a[k] != b[k]]
    assert not diff, diff[:5]
    print(f"round trip {v}: {len(a)} tensors bit-exact")
assert len(json.load(open(f"{work}/back_f32/model.safetensors.index.json"))["weight_map"]) == len(a)
cfg = json.load(open(f"{work}/back_f32/config.json"))
assert cfg["n_routed_experts"] == 4 and cfg["hidden_size"] == 64, cfg
PY
ls "$WORK/back_f32"/model-00002-of-*.safetensors >/dev/null 2>&1 || fail "--max_shard_bytes did not split the shards"

# A model that does not fit: the tensor is named with both shapes; nothing is left behind.
run_expect_fail "$WORK/misfit.out" "$from_hf" "$case/hf_bf16" "$WORK/misfit" --model_flavor debugmodel "${model[@]}" \
    --model.kv_lora_rank 16
expect_in "$WORK/misfit.out" "tensor model.layers.0.self_attn.kv_a_layernorm.weight has shape (32) but the model's layers.0.attention.kv_norm.weight needs (16)"
[ ! -e "$WORK/misfit" ] || fail "a failed conversion left its output folder"
[ ! -e "$WORK/misfit.tmp" ] || fail "a failed conversion left its temporary folder"
run_expect_fail "$WORK/layers.out" "$from_hf" "$case/hf_f32" "$WORK/layers" --model_flavor debugmodel "${model[@]}" \
    --model.n_layers 2
expect_in "$WORK/layers.out" "num_hidden_layers = 3 but the model has model.n_layers = 2"
run_expect_fail "$WORK/exists.out" "$from_hf" "$case/hf_f32" "$WORK/dsv3_f32" --model_flavor debugmodel "${model[@]}"
expect_in "$WORK/exists.out" "already exists"
# NaN weights convert as they are, each tensor named in a warning, in both directions.
cp -r "$case/hf_f32" "$WORK/hf_nan"
python3 - "$WORK/hf_nan" <<'PY' || fail "could not write a NaN into the HF folder"
import glob, json, struct, sys
name = "model.layers.0.self_attn.kv_a_layernorm.weight"
for path in glob.glob(f"{sys.argv[1]}/*.safetensors"):
    blob = bytearray(open(path, "rb").read())
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    if name in header:
        start = 8 + n + header[name]["data_offsets"][0]
        blob[start:start + 4] = struct.pack("<f", float("nan"))
        open(path, "wb").write(blob)
        break
else:
    raise SystemExit(f"{name} not found")
PY
"$from_hf" "$WORK/hf_nan" "$WORK/dsv3_nan" --model_flavor debugmodel "${model[@]}" >"$WORK/nan.out" 2>&1 ||
    { cat "$WORK/nan.out"; fail "convert_from_hf with a NaN"; }
expect_in "$WORK/nan.out" "tensor model.layers.0.self_attn.kv_a_layernorm.weight holds 1 NaN or infinite value(s)"
"$to_hf" "$WORK/dsv3_nan" "$WORK/back_nan" >"$WORK/back_nan.out" 2>&1 || { cat "$WORK/back_nan.out"; fail "convert_to_hf with a NaN"; }
expect_in "$WORK/back_nan.out" "tensor model.layers.0.self_attn.kv_a_layernorm.weight holds 1 NaN or infinite value(s)"
echo "hf_convert: ok"
