#!/usr/bin/python3
"""Parameter counts and training FLOPs per token of the DeepSeek-V3 flavors, from PyTorch.

Builds every flavor's module tree on the meta device (no memory is allocated) with the same
parameter names as torchtitan's DeepSeekV3Model, then sorts the named parameters into
embedding / router / shared experts / routed experts / the rest by name, the way torchtitan's
MoE FLOP counter does. Works with torch 1.13 (no nn.RMSNorm there, so a norm is a bare weight).

Prints one line per flavor: name, total, active, FLOPs per token at the given seq_len.
"""

import torch
from torch import nn

META = torch.device("meta")

# name: (vocab, dim, inter_dim, moe_inter_dim, n_layers, n_dense_layers, n_heads,
#        num_experts, num_shared_experts, top_k, q_lora_rank, seq_len for the FLOPs)
FLAVORS = {
    "debugmodel": (2048, 256, 1024, 256, 6, 1, 16, 8, 2, 3, 0, 2048),
    "16B": (102400, 2048, 10944, 1408, 27, 1, 16, 64, 2, 6, 0, 4096),
    "236B": (102400, 5120, 12288, 1536, 60, 1, 128, 160, 2, 6, 1536, 4096),
    "671B": (129280, 7168, 18432, 2048, 61, 3, 128, 256, 1, 8, 1536, 4096),
}
KV_LORA_RANK, QK_NOPE, QK_ROPE, V_HEAD = 512, 128, 64, 128


def linear(n_in, n_out):
    return nn.Linear(n_in, n_out, bias=False, device=META)


class Norm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d, device=META))


class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.w1, self.w2, self.w3 = linear(d, hidden), linear(hidden, d), linear(d, hidden)


class Experts(nn.Module):
    def __init__(self, e, d, hidden):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(e, hidden, d, device=META))
        self.w2 = nn.Parameter(torch.empty(e, d, hidden, device=META))
        self.w3 = nn.Parameter(torch.empty(e, hidden, d, device=META))


class Router(nn.Module):
    def __init__(self, d, e):
        super().__init__()
        self.gate = linear(d, e)


class MoE(nn.Module):
    def __init__(self, d, hidden, e, shared):
        super().__init__()
        self.experts = Experts(e, d, hidden)
        self.router = Router(d, e)
        # expert_bias / tokens_per_expert are buffers: not parameters.
        self.register_buffer("expert_bias", torch.empty(e, device=META))
        self.shared_experts = SwiGLU(d, hidden * shared) if shared > 0 else None


class MLA(nn.Module):
    def __init__(self, d, h, q_lora):
        super().__init__()
        qk = QK_NOPE + QK_ROPE
        if q_lora == 0:
            self.wq = linear(d, h * qk)
        else:
            self.wq_a = linear(d, q_lora)
            self.q_norm = Norm(q_lora)
            self.wq_b = linear(q_lora, h * qk)
        self.wkv_a = linear(d, KV_LORA_RANK + QK_ROPE)
        self.kv_norm = Norm(KV_LORA_RANK)
        self.wkv_b = linear(KV_LORA_RANK, h * (QK_NOPE + V_HEAD))
        self.wo = linear(h * V_HEAD, d)


class Block(nn.Module):
    def __init__(self, layer, f):
        super().__init__()
        _, d, inter, moe_inter, _, n_dense, h, e, shared, _, q_lora, _ = f
        self.attention = MLA(d, h, q_lora)
        self.attention_norm, self.ffn_norm = Norm(d), Norm(d)
        if layer < n_dense:
            self.feed_forward = SwiGLU(d, inter)
        else:
            self.moe = MoE(d, moe_inter, e, shared)


class Model(nn.Module):
    def __init__(self, f):
        super().__init__()
        vocab, d, n_layers = f[0], f[1], f[4]
        self.tok_embeddings = nn.Embedding(vocab, d, device=META)
        self.layers = nn.ModuleDict({str(i): Block(i, f) for i in range(n_layers)})
        self.norm = Norm(d)
        self.output = linear(d, vocab)


def counts(name):
    f = FLAVORS[name]
    n_layers, n_heads, num_experts, top_k, seq_len = f[4], f[6], f[7], f[9], f[11]
    groups = {"embedding": 0, "router": 0, "shared": 0, "routed": 0, "rest": 0}
    for pname, p in Model(f).named_parameters():
        if "embedding" in pname:
            key = "embedding"
        elif "moe.shared_experts" in pname:
            key = "shared"
        elif "moe.router" in pname:
            key = "router"
        elif "moe.experts" in pname:
            key = "routed"
        else:
            key = "rest"
        groups[key] += p.numel()
    total = sum(groups.values())
    active = total - groups["routed"] + groups["routed"] * top_k // num_experts
    flops = 6 * (active - groups["embedding"]) + 6 * n_layers * n_heads * (
        QK_NOPE + QK_ROPE + V_HEAD
    ) * seq_len
    return total, active, seq_len, flops


def main():
    print(f"torch {torch.__version__}")
    print(f"{'flavor':<12}{'total':>18}{'active':>18}{'seq_len':>9}{'flops/token':>20}")
    for name in FLAVORS:
        total, active, seq_len, flops = counts(name)
        print(f"{name:<12}{total:>18,}{active:>18,}{seq_len:>9}{flops:>20,}")


if __name__ == "__main__":
    main()
