#!/usr/bin/python3
"""Writes small Hugging Face DeepSeek-V3 checkpoints of the reference model, and the loss the
reference gives on their first training step, for the HF conversion tests.

    hf_case.py OUT_DIR [--seed N] [--min-margin X]

The model (sigmoid routing with route_norm, non-zero expert biases, a dense layer, shared
experts, dims that are not multiples of 128) is initialised by dsv3_reference.py; its
parameters (torchtitan FQNs) are renamed as torchtitan's DeepSeekV3StateDictAdapter.to_hf
does (experts split into model.layers.L.mlp.experts.E.*) and written with the `safetensors`
package in three folders, each with config.json:

  hf_f32/   F32, one model.safetensors
  hf_bf16/  BF16 (round to nearest even), two shards + model.safetensors.index.json
  hf_fp8/   the layers' linear weights (router gates excepted) as F8_E4M3 with
            <name>_scale_inv 128x128 block scales (F32, amax / 448 per block), the rest BF16,
            as DeepSeek's own checkpoints; two shards + index

tokens.bin is a token file (little-endian uint32) for training.dataset = "tokens"; step 1
takes its first GLOBAL_BATCH windows of seq_len + 1 tokens. expected.json holds, per folder,
the float64 reference loss of that step computed from the weights as stored (after rounding
or quantisation), and the dsv3 `--model.*` overrides of this model. As in model_case.py, the
seed is the first whose smallest routing margin (for all three weight sets) is at least
--min-margin, so float32 and float64 route alike.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors import TensorSpec, serialize_file
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsv3_reference as ref  # noqa: E402

SEQ_LEN = 32
GLOBAL_BATCH = 4
BLOCK = 128
E4M3_MAX = 448.0

MODEL = dict(vocab_size=256, dim=64, inter_dim=160, moe_inter_dim=48, n_layers=3, n_dense_layers=1,
             n_heads=2, norm_eps=1e-5, num_experts=4, num_shared_experts=1, top_k=2,
             score_func="sigmoid", route_norm=True, route_scale=2.5, num_expert_groups=0,
             num_limited_groups=0, load_balance_coeff=1e-3, q_lora_rank=0, kv_lora_rank=32,
             qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, original_seq_len=4096,
             rope_theta=10000.0, rope_factor=40.0, beta_fast=32, beta_slow=1, mscale=1.0,
             attn_mask_type="causal")

# torchtitan FQN pattern -> HF pattern (DeepSeekV3StateDictAdapter.from_hf_map, reversed)
TO_HF = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "layers.{}.attention.wq.weight": "model.layers.{}.self_attn.q_proj.weight",
    "layers.{}.attention.wkv_a.weight": "model.layers.{}.self_attn.kv_a_proj_with_mqa.weight",
    "layers.{}.attention.kv_norm.weight": "model.layers.{}.self_attn.kv_a_layernorm.weight",
    "layers.{}.attention.wkv_b.weight": "model.layers.{}.self_attn.kv_b_proj.weight",
    "layers.{}.attention.wo.weight": "model.layers.{}.self_attn.o_proj.weight",
    "layers.{}.feed_forward.w1.weight": "model.layers.{}.mlp.gate_proj.weight",
    "layers.{}.feed_forward.w3.weight": "model.layers.{}.mlp.up_proj.weight",
    "layers.{}.feed_forward.w2.weight": "model.layers.{}.mlp.down_proj.weight",
    "layers.{}.attention_norm.weight": "model.layers.{}.input_layernorm.weight",
    "layers.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "layers.{}.moe.experts.w1": "model.layers.{}.mlp.experts.{}.gate_proj.weight",
    "layers.{}.moe.experts.w3": "model.layers.{}.mlp.experts.{}.up_proj.weight",
    "layers.{}.moe.experts.w2": "model.layers.{}.mlp.experts.{}.down_proj.weight",
    "layers.{}.moe.router.gate.weight": "model.layers.{}.mlp.gate.weight",
    "layers.{}.moe.shared_experts.w1.weight": "model.layers.{}.mlp.shared_experts.gate_proj.weight",
    "layers.{}.moe.shared_experts.w3.weight": "model.layers.{}.mlp.shared_experts.up_proj.weight",
    "layers.{}.moe.shared_experts.w2.weight": "model.layers.{}.mlp.shared_experts.down_proj.weight",
    "layers.{}.moe.expert_bias": "model.layers.{}.mlp.gate.e_score_correction_bias",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def to_hf(state):
    """{torchtitan FQN: float32 array} -> {HF name: float32 array}, experts split."""
    out = {}
    for fqn, value in state.items():
        parts = fqn.split(".")
        layer = parts[1] if parts[0] == "layers" else None
        key = fqn if layer is None else fqn.replace(f"layers.{layer}.", "layers.{}.", 1)
        if key not in TO_HF:
            continue  # tokens_per_expert: a counter, not part of the checkpoint
        hf = TO_HF[key]
        if ".moe.experts." in fqn:
            for e in range(value.shape[0]):
                out[hf.format(layer, e)] = np.ascontiguousarray(value[e])
        else:
            out[hf.format(layer) if layer is not None else hf] = value
    return out


def bf16_bits(x):
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def e4m3_table():
    """Values of the non-negative finite e4m3fn codes 0 .. 126, increasing with the code."""
    vals = []
    for code in range(127):
        e, m = code >> 3, code & 7
        vals.append(m * 2.0 ** -9 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
    return np.array(vals)


def e4m3_encode(x):
    """float -> e4m3fn codes, round to nearest even, saturating at 448."""
    table = e4m3_table()
    a = np.minimum(np.abs(x), E4M3_MAX)
    hi = np.clip(np.searchsorted(table, a), 0, 126)
    lo = np.clip(hi - 1, 0, 126)
    d_lo, d_hi = a - table[lo], table[hi] - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    return code | np.where(x < 0, 0x80, 0).astype(np.uint8)


def quantize(w):
    """(M, N) float32 -> e4m3 codes (M, N), scale_inv (ceil(M/128), ceil(N/128)) float32, and
    the dequantised weight."""
    M, N = w.shape
    R, C = -(-M // BLOCK), -(-N // BLOCK)
    scale = np.zeros((R, C), np.float32)
    codes = np.zeros((M, N), np.uint8)
    deq = np.zeros((M, N), np.float32)
    table = e4m3_table()
    for r in range(R):
        for c in range(C):
            blk = w[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK]
            s = np.float32(max(float(np.abs(blk).max()), 1e-12) / E4M3_MAX)
            q = e4m3_encode(blk / s)
            scale[r, c] = s
            codes[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK] = q
            mag = table[np.minimum(q & 0x7F, 126)].astype(np.float32)
            deq[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK] = np.where(q & 0x80, -mag, mag) * s
    return codes, scale, deq


def is_fp8(name, value):
    return (name.startswith("model.layers.") and value.ndim == 2 and name.endswith("_proj.weight")
            or name.endswith("kv_a_proj_with_mqa.weight"))


def raw(dtype, array, data):
    return {"dtype": dtype, "shape": list(array.shape), "data": data}


# safetensors' names of the dtypes (torch's, without "torch.")
SPEC_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn"}


def serialize(tensors, path):
    """Writes {name: raw dict} through the package's own serializer (any dtype, no torch)."""
    buffers = {n: np.frombuffer(t["data"], np.uint8) for n, t in tensors.items()}
    specs = {n: TensorSpec(dtype=SPEC_DTYPE[t["dtype"]], shape=t["shape"], data_ptr=buffers[n].ctypes.data,
                           data_len=buffers[n].nbytes) for n, t in tensors.items()}
    serialize_file(specs, path, metadata={"format": "pt"})


def write_sharded(folder, tensors, n_shards):
    """tensors: {name: raw dict}; split by name order into n_shards files + index."""
    names = list(tensors)
    per = -(-len(names) // n_shards)
    weight_map, total = {}, 0
    for s in range(n_shards):
        file = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s * per:(s + 1) * per]}
        serialize(part, os.path.join(folder, file))
        for n, t in part.items():
            weight_map[n] = file
            total += len(t["data"])
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)


def hf_config():
    m = MODEL
    return {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
            "vocab_size": m["vocab_size"], "hidden_size": m["dim"], "intermediate_size": m["inter_dim"],
            "moe_intermediate_size": m["moe_inter_dim"], "num_hidden_layers": m["n_layers"],
            "first_k_dense_replace": m["n_dense_layers"], "num_attention_heads": m["n_heads"],
            "n_routed_experts": m["num_experts"], "n_shared_experts": m["num_shared_experts"],
            "num_experts_per_tok": m["top_k"], "scoring_func": m["score_func"],
            "norm_topk_prob": m["route_norm"], "routed_scaling_factor": m["route_scale"],
            "q_lora_rank": None, "kv_lora_rank": m["kv_lora_rank"], "qk_nope_head_dim": m["qk_nope_head_dim"],
            "qk_rope_head_dim": m["qk_rope_head_dim"], "v_head_dim": m["v_head_dim"],
            "rms_norm_eps": m["norm_eps"], "rope_theta": m["rope_theta"]}


def reference_loss(state, tokens):
    """Step-1 loss of the reference (float64) with these float32 weights; and the routing margin."""
    args = ref.ModelArgs.from_config(dict(MODEL), SEQ_LEN, final_norm_eps=ref.FLOAT32_EPS)
    model = ref.DeepSeekV3(args, torch.float64)
    with torch.no_grad():
        own = model.state_dict()
        for fqn, value in state.items():
            own[fqn].copy_(torch.from_numpy(value).to(torch.float64))
        model.reset_routing_margin()
        windows = torch.from_numpy(tokens[:GLOBAL_BATCH * (SEQ_LEN + 1)].astype(np.int64)).view(GLOBAL_BATCH, SEQ_LEN + 1)
        logits = model(windows[:, :SEQ_LEN])
        loss = ref.cross_entropy_sum(logits, windows[:, 1:]) / (GLOBAL_BATCH * SEQ_LEN)
    return float(loss), model.min_routing_margin()


def variants(seed):
    """The three stored weight sets as ({FQN: float32 as stored}, {HF name: serialize dict})."""
    args = ref.ModelArgs.from_config(dict(MODEL), SEQ_LEN, final_norm_eps=ref.FLOAT32_EPS)
    model = ref.DeepSeekV3(args, torch.float32)
    model.init_weights(seed)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for fqn, t in model.state_dict().items():
        if fqn.endswith("tokens_per_expert"):
            continue
        if fqn.endswith("expert_bias"):  # a trained model's biases are not zero
            t = 0.05 * torch.randn(t.shape, generator=g)
        state[fqn] = t.detach().to(torch.float32).numpy().copy()
    f32 = to_hf(state)
    out = {"hf_f32": (state, {n: raw("F32", v, v.tobytes()) for n, v in f32.items()})}
    # BF16: every tensor rounded; the expert bias stays F32 (as DeepSeek stores it).
    bf16_state, bf16 = {}, {}
    for fqn, v in state.items():
        bf16_state[fqn] = v if fqn.endswith("expert_bias") else bf16_value(bf16_bits(v)).reshape(v.shape)
    for n, v in to_hf(bf16_state).items():
        bf16[n] = raw("F32", v, v.tobytes()) if n.endswith("e_score_correction_bias") else raw("BF16", v, bf16_bits(v).tobytes())
    out["hf_bf16"] = (bf16_state, bf16)
    # FP8: quantised linear weights with scales, the rest BF16; dequantised for the reference.
    fp8, deq_hf = {}, {}
    for n, v in to_hf(bf16_state).items():
        if is_fp8(n, v):
            codes, scale, deq = quantize(v)
            fp8[n] = raw("F8_E4M3", codes, codes.tobytes())
            fp8[n + "_scale_inv"] = raw("F32", scale, scale.tobytes())
            deq_hf[n] = deq
        else:
            fp8[n] = bf16[n]
            deq_hf[n] = v
    fp8_state = {}
    for fqn, v in bf16_state.items():  # back to FQNs through the same names
        parts = fqn.split(".")
        if ".moe.experts." in fqn:
            hf = TO_HF[fqn.replace(f"layers.{parts[1]}.", "layers.{}.", 1)]
            fp8_state[fqn] = np.stack([deq_hf[hf.format(parts[1], e)] for e in range(v.shape[0])])
        else:
            key = fqn if parts[0] != "layers" else fqn.replace(f"layers.{parts[1]}.", "layers.{}.", 1)
            fp8_state[fqn] = deq_hf[TO_HF[key].format(parts[1]) if parts[0] == "layers" else TO_HF[key]]
    out["hf_fp8"] = (fp8_state, fp8)
    return out


def model_overrides():
    flags = []
    for k, v in MODEL.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        flags += [f"--model.{k}", str(v)]
    return flags


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--min-margin", type=float, default=2e-6)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    tokens = rng.integers(0, MODEL["vocab_size"], 4 * GLOBAL_BATCH * (SEQ_LEN + 1), dtype=np.uint32)
    tokens.astype("<u4").tofile(os.path.join(a.out, "tokens.bin"))
    for seed in range(a.seed, a.seed + 50):
        sets = variants(seed)
        losses = {k: reference_loss(state, tokens) for k, (state, _) in sets.items()}
        margin = min(m for _, m in losses.values())
        if margin >= a.min_margin:
            break
    else:
        raise SystemExit("no seed with a large enough routing margin")
    for folder, (_, tensors) in sets.items():
        d = os.path.join(a.out, folder)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_config(), f, indent=1)
        if folder == "hf_f32":
            save_file({n: np.frombuffer(t["data"], np.float32).reshape(t["shape"]) for n, t in tensors.items()},
                      os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        else:
            write_sharded(d, tensors, 2)
    expected = {"seed": seed, "margin": margin, "seq_len": SEQ_LEN, "global_batch": GLOBAL_BATCH,
                "losses": {k: v[0] for k, v in losses.items()}, "model_args": model_overrides()}
    with open(os.path.join(a.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(f"seed {seed}, routing margin {margin:.2e}, losses " +
          ", ".join(f"{k} {v[0]:.6f}" for k, v in losses.items()))


if __name__ == "__main__":
    main()
