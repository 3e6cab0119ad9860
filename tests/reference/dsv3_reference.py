#!/usr/bin/python3
"""PyTorch reference of DeepSeek-V3 pre-training: the model, the loss and one training step.

It follows torchtitan's DeepSeek-V3 (commit 238fa99) operation by operation, with the same
module tree, so `state_dict()` has torchtitan's names (FQNs):

    tok_embeddings.weight                       (V, D)
    layers.{i}.attention_norm.weight            (D,)
    layers.{i}.attention.wq.weight              (H·Dqk, D)            q_lora_rank == 0
    layers.{i}.attention.wq_a.weight            (Rq, D)               q_lora_rank > 0
    layers.{i}.attention.q_norm.weight          (Rq,)
    layers.{i}.attention.wq_b.weight            (H·Dqk, Rq)
    layers.{i}.attention.wkv_a.weight           (Rkv + Drope, D)
    layers.{i}.attention.kv_norm.weight         (Rkv,)
    layers.{i}.attention.wkv_b.weight           (H·(Dnope + Dv), Rkv)
    layers.{i}.attention.wo.weight              (D, H·Dv)
    layers.{i}.ffn_norm.weight                  (D,)
    layers.{i}.feed_forward.w1/w3.weight        (I, D)                i < n_dense_layers
    layers.{i}.feed_forward.w2.weight           (D, I)
    layers.{i}.moe.router.gate.weight           (E, D)                i >= n_dense_layers
    layers.{i}.moe.experts.w1 / w3              (E, F, D)
    layers.{i}.moe.experts.w2                   (E, D, F)
    layers.{i}.moe.shared_experts.w1/w3.weight  (F·S, D)              num_shared_experts S > 0
    layers.{i}.moe.shared_experts.w2.weight     (D, F·S)
    layers.{i}.moe.expert_bias                  (E,)  buffer          load_balance_coeff > 0
    norm.weight                                 (D,)
    output.weight                               (V, D)

Legend: B batch, T sequence, V vocabulary, D dim, H heads, Dqk = Dnope + Drope, Dv value head,
Rq/Rkv the q/kv LoRA ranks, I dense hidden, F expert hidden, E experts, K experts per token,
N = B·T tokens.

Everything runs in the dtype the model is built with: float64 for the numerics reference,
float32 for the benchmark. Where torchtitan forces float32 (router scores, RoPE, the loss) the
reference uses the model dtype instead, so a float64 model is float64 throughout.

The final norm: torchtitan builds it as RMSNorm(dim) without eps, i.e. eps = finfo(dtype).eps.
A float32 run (which is what the C implementation is) therefore uses 1.1920929e-07, while a
float64 model would use 2.22e-16. `ModelArgs.final_norm_eps` makes it explicit: None means
finfo(dtype).eps as torchtitan, a number is used as given (the case writer passes the float32
value so that the float64 reference computes what a float32 run computes).

Run as a script, it checks itself (gradcheck, accumulation, LR schedule).
"""

import argparse
import dataclasses
import inspect
import math
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # 1.1920929e-07
ROUTE_NORM_EPS = 1e-20  # torchtitan adds this to the sum of the top-k scores
GRAD_CLIP_EPS = 1e-6  # torch's clip_grad_norm_: max_norm / (total_norm + 1e-6)
INIT_STD = 0.02
OUTPUT_CUTOFF = 3.0  # the output head is cut at ±3σ; every other trunc-normal at ±2 (absolute)


# ----------------------------------------------------------------------------------------------
# Arguments


@dataclass
class ModelArgs:
    vocab_size: int = 2048
    dim: int = 256
    inter_dim: int = 1024
    moe_inter_dim: int = 256
    n_layers: int = 6
    n_dense_layers: int = 1
    n_heads: int = 16
    norm_eps: float = 1e-5
    # MoE
    num_experts: int = 8
    num_shared_experts: int = 2
    top_k: int = 3
    score_func: str = "softmax"
    route_norm: bool = False
    route_scale: float = 1.0
    num_expert_groups: int = 0  # 0: no group-limited routing
    num_limited_groups: int = 0
    load_balance_coeff: Optional[float] = 1e-3  # None or 0: no expert_bias
    # MLA
    q_lora_rank: int = 0
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    # RoPE / YaRN
    original_seq_len: int = 4096
    rope_theta: float = 10000.0
    rope_factor: float = 40.0
    beta_fast: int = 32
    beta_slow: int = 1
    mscale: float = 1.0
    attn_mask_type: str = "causal"
    # the training seq_len (torchtitan sets max_seq_len from training.seq_len)
    max_seq_len: int = 2048
    # eps of the final norm; None: finfo(dtype).eps like torchtitan's RMSNorm(dim)
    final_norm_eps: Optional[float] = None

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def yarn_active(self) -> bool:
        return self.max_seq_len > self.original_seq_len

    @property
    def balancing(self) -> bool:
        return bool(self.load_balance_coeff)

    @property
    def moe_layer_ids(self) -> List[int]:
        return list(range(self.n_dense_layers, self.n_layers))

    # the "model" object of a case's config.json
    CONFIG_KEYS = (
        "vocab_size", "dim", "inter_dim", "moe_inter_dim", "n_layers", "n_dense_layers",
        "n_heads", "norm_eps", "num_experts", "num_shared_experts", "top_k", "score_func",
        "route_norm", "route_scale", "num_expert_groups", "num_limited_groups",
        "load_balance_coeff", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
        "qk_rope_head_dim", "v_head_dim", "original_seq_len", "rope_theta", "rope_factor",
        "beta_fast", "beta_slow", "mscale", "attn_mask_type",
    )

    def to_config(self) -> dict:
        out = {k: getattr(self, k) for k in self.CONFIG_KEYS}
        out["load_balance_coeff"] = float(self.load_balance_coeff or 0.0)
        return out

    @classmethod
    def from_config(cls, model: dict, seq_len: int, final_norm_eps=None) -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(model) - known
        if unknown:
            raise ValueError(f"unknown model keys: {sorted(unknown)}")
        return cls(**model, max_seq_len=seq_len, final_norm_eps=final_norm_eps)

    def validate(self) -> None:
        if self.score_func not in ("softmax", "sigmoid"):
            raise ValueError(f"score_func {self.score_func!r}: expected softmax or sigmoid")
        if self.attn_mask_type not in ("causal", "block_causal"):
            raise ValueError(f"attn_mask_type {self.attn_mask_type!r}")
        if self.qk_rope_head_dim % 2:
            raise ValueError("qk_rope_head_dim must be even (RoPE rotates pairs)")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError("expected 1 <= top_k <= num_experts")
        if self.num_expert_groups:
            G, L = self.num_expert_groups, self.num_limited_groups
            if self.num_experts % G or self.num_experts // G < 2:
                raise ValueError("num_expert_groups must split the experts into groups of >= 2")
            if not 1 <= L <= G or self.top_k > L * (self.num_experts // G):
                raise ValueError("num_limited_groups out of range for num_expert_groups/top_k")


def debugmodel_args(seq_len: int) -> ModelArgs:
    """torchtitan's `debugmodel` flavor (softmax routing, score after the experts)."""
    return ModelArgs(
        vocab_size=2048, dim=256, inter_dim=1024, moe_inter_dim=256, n_layers=6,
        n_dense_layers=1, n_heads=16, num_experts=8, num_shared_experts=2, top_k=3,
        score_func="softmax", route_norm=False, q_lora_rank=0, kv_lora_rank=512,
        qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, mscale=0.70,
        max_seq_len=seq_len,
    )


# ----------------------------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + eps) · weight over the last dimension (torch's nn.RMSNorm).

    eps None: finfo(x.dtype).eps, which is what nn.RMSNorm(dim) without eps does."""

    def __init__(self, dim: int, eps: Optional[float], dtype: torch.dtype):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.weight


def rope_angles(args: ModelArgs) -> torch.Tensor:
    """Rotation angles (max_seq_len, Drope/2) in float64: position × frequency, the frequencies
    corrected by YaRN when the training length exceeds original_seq_len (torchtitan's
    precompute_freqs_cis, which returns exp(i·angle))."""
    dim, base, factor = args.qk_rope_head_dim, args.rope_theta, args.rope_factor
    half = torch.arange(0, dim, 2, dtype=torch.float64)
    inv_freq = 1.0 / (base ** (half / dim))
    if args.yarn_active:
        def correction_dim(rotations: float) -> float:
            # the channel index at which the wavelength equals original_seq_len / rotations
            return dim * math.log(args.original_seq_len / (rotations * 2 * math.pi)) / (
                2 * math.log(base))

        low = max(math.floor(correction_dim(args.beta_fast)), 0)
        high = min(math.ceil(correction_dim(args.beta_slow)), dim - 1)
        if low == high:
            high += 0.001  # keep the ramp finite
        ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        keep = 1 - ramp  # 1: leave the frequency alone, 0: divide it by rope_factor
        inv_freq = inv_freq / factor * (1 - keep) + inv_freq * keep
    pos = torch.arange(args.max_seq_len, dtype=torch.float64)
    return torch.outer(pos, inv_freq)


def softmax_scale(args: ModelArgs) -> float:
    scale = args.qk_head_dim ** -0.5
    if args.yarn_active:
        m = 0.1 * args.mscale * math.log(args.rope_factor) + 1.0
        scale = scale * m * m
    return scale


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates interleaved pairs (x[2j], x[2j+1]) of the last dim by the angle of (t, j).

    x (B, T, h, Drope); cos, sin (T, Drope/2)."""
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y0 = x0 * c - x1 * s
    y1 = x0 * s + x1 * c
    return torch.stack((y0, y1), dim=-1).flatten(-2)


def document_ids(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) document index of each position, as torchtitan's get_document_mask_mod: an EOS
    token ends its document, the next position starts a new one."""
    eos = tokens == eos_id
    eos[:, -1] = True  # no effect on the ids (the last cumsum is dropped); kept for fidelity
    run = torch.cumsum(eos.long(), dim=1)
    ids = torch.zeros_like(run)
    ids[:, 1:] = run[:, :-1]
    return ids


def attention_mask(tokens: torch.Tensor, mask_type: str, eos_id: Optional[int]) -> torch.Tensor:
    """Boolean mask, True where query q may attend key k: (1, 1, T, T) causal or
    (B, 1, T, T) block-causal."""
    T = tokens.shape[1]
    pos = torch.arange(T, device=tokens.device)
    causal = pos[:, None] >= pos[None, :]
    if mask_type == "causal":
        return causal[None, None]
    if mask_type == "block_causal":
        if eos_id is None:
            raise ValueError("block_causal masks need eos_id")
        doc = document_ids(tokens, eos_id)
        same = doc[:, :, None] == doc[:, None, :]
        return (causal[None] & same)[:, None]
    raise ValueError(f"unknown attn_mask_type {mask_type!r}")


def linear(n_in: int, n_out: int, dtype: torch.dtype) -> nn.Linear:
    return nn.Linear(n_in, n_out, bias=False, dtype=dtype)


def has_sdpa_with_scale() -> bool:
    fn = getattr(F, "scaled_dot_product_attention", None)
    if fn is None:
        return False
    try:
        return "scale" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "scale" in (fn.__doc__ or "")


class Attention(nn.Module):
    """Multi-head latent attention (MLA)."""

    def __init__(self, args: ModelArgs, dtype: torch.dtype, impl: str):
        super().__init__()
        self.args = args
        H, D = args.n_heads, args.dim
        if args.q_lora_rank == 0:
            self.wq = linear(D, H * args.qk_head_dim, dtype)
        else:
            self.wq_a = linear(D, args.q_lora_rank, dtype)
            self.q_norm = RMSNorm(args.q_lora_rank, args.norm_eps, dtype)
            self.wq_b = linear(args.q_lora_rank, H * args.qk_head_dim, dtype)
        self.wkv_a = linear(D, args.kv_lora_rank + args.qk_rope_head_dim, dtype)
        self.kv_norm = RMSNorm(args.kv_lora_rank, args.norm_eps, dtype)
        self.wkv_b = linear(args.kv_lora_rank, H * (args.qk_nope_head_dim + args.v_head_dim), dtype)
        self.wo = linear(H * args.v_head_dim, D, dtype)
        self.scale = softmax_scale(args)
        self.impl = impl  # "math" or "sdpa"

    def forward(self, x, cos, sin, mask):
        a = self.args
        B, T, _ = x.shape
        H = a.n_heads
        if a.q_lora_rank == 0:
            q = self.wq(x)
        else:
            q = self.wq_b(self.q_norm(self.wq_a(x)))
        q = q.view(B, T, H, a.qk_head_dim)  # (B, T, H, Dqk)
        q_nope, q_pe = torch.split(q, [a.qk_nope_head_dim, a.qk_rope_head_dim], dim=-1)
        q = torch.cat([q_nope, apply_rope(q_pe, cos, sin)], dim=-1)

        kv = self.wkv_a(x)  # (B, T, Rkv + Drope)
        c_kv, k_pe = torch.split(kv, [a.kv_lora_rank, a.qk_rope_head_dim], dim=-1)
        k_pe = apply_rope(k_pe.unsqueeze(2), cos, sin)  # (B, T, 1, Drope), shared by all heads
        kv = self.wkv_b(self.kv_norm(c_kv)).view(B, T, H, a.qk_nope_head_dim + a.v_head_dim)
        k_nope, v = torch.split(kv, [a.qk_nope_head_dim, a.v_head_dim], dim=-1)
        k = torch.cat([k_nope, k_pe.expand(-1, -1, H, -1)], dim=-1)  # (B, T, H, Dqk)

        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, ·)
        if self.impl == "sdpa":
            if a.attn_mask_type == "causal":
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
            else:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        else:
            s = torch.matmul(q, k.transpose(-2, -1)) * self.scale  # (B, H, T, T)
            s = s.masked_fill(~mask, float("-inf"))
            o = torch.matmul(torch.softmax(s, dim=-1), v)  # (B, H, T, Dv)
        o = o.transpose(1, 2).reshape(B, T, H * a.v_head_dim)
        return self.wo(o)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) · w3 x). Dense FFN layers and the shared experts."""

    def __init__(self, dim: int, hidden: int, dtype: torch.dtype):
        super().__init__()
        self.w1 = linear(dim, hidden, dtype)
        self.w2 = linear(hidden, dim, dtype)
        self.w3 = linear(dim, hidden, dtype)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class GroupedExperts(nn.Module):
    """E SwiGLU experts stored as 3-D weights, run one expert at a time over its contiguous
    slice of the expert-sorted tokens (torchtitan's for-loop path)."""

    def __init__(self, dim: int, hidden: int, num_experts: int, dtype: torch.dtype):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_experts, hidden, dim, dtype=dtype))
        self.w2 = nn.Parameter(torch.empty(num_experts, dim, hidden, dtype=dtype))
        self.w3 = nn.Parameter(torch.empty(num_experts, hidden, dim, dtype=dtype))

    def forward(self, x: torch.Tensor, counts: List[int]) -> torch.Tensor:
        # x (N·K, D) sorted by expert; counts[e] rows belong to expert e
        outs = []
        for e, xe in enumerate(torch.split(x, counts, dim=0)):
            h = F.silu(xe @ self.w1[e].t()) * (xe @ self.w3[e].t())
            outs.append(h @ self.w2[e].t())
        return torch.cat(outs, dim=0)


class Router(nn.Module):
    """Token-choice top-k router (torchtitan's TokenChoiceTopKRouter, no gate bias).

    Also keeps the smallest routing margin seen (the gap between the last chosen and the first
    rejected candidate, for groups and for experts): a test against a float32 implementation is
    only meaningful when no margin is near the float32 rounding of the scores."""

    def __init__(self, args: ModelArgs, dtype: torch.dtype):
        super().__init__()
        self.args = args
        self.gate = linear(args.dim, args.num_experts, dtype)
        self.min_margin = math.inf
        self.record: Optional[List[torch.Tensor]] = None  # a list: chosen experts are appended

    def _choice(self, choice: torch.Tensor) -> torch.Tensor:
        """choice (N, E) = scores (+ bias): restrict to the best groups, return (N, K) indices."""
        a = self.args
        with torch.no_grad():
            if a.num_expert_groups:
                G, L = a.num_expert_groups, a.num_limited_groups
                grouped = choice.view(-1, G, a.num_experts // G)
                group_score = grouped.topk(2, dim=-1).values.sum(dim=-1)  # (N, G)
                if L < G:
                    top = group_score.sort(dim=-1, descending=True).values
                    self._note_margin(top[:, L - 1] - top[:, L])
                chosen_groups = group_score.topk(L, dim=-1, sorted=False).indices
                dropped = torch.ones_like(group_score, dtype=torch.bool)
                dropped.scatter_(1, chosen_groups, False)
                choice = grouped.masked_fill(dropped.unsqueeze(-1), float("-inf"))
                choice = choice.view(-1, a.num_experts)
            if a.top_k < a.num_experts:
                top = choice.sort(dim=-1, descending=True).values
                gap = top[:, a.top_k - 1] - top[:, a.top_k]
                self._note_margin(gap[torch.isfinite(gap)])
            return choice.topk(a.top_k, dim=-1, sorted=False).indices

    def _note_margin(self, gaps: torch.Tensor) -> None:
        if gaps.numel():
            self.min_margin = min(self.min_margin, float(gaps.min()))

    def forward(self, x: torch.Tensor, expert_bias: Optional[torch.Tensor]):
        # x (N, D) -> weights (N, K), chosen (N, K), counts (E,) int64
        a = self.args
        logits = self.gate(x)  # (N, E)
        if a.score_func == "sigmoid":
            scores = torch.sigmoid(logits)
        else:
            scores = torch.softmax(logits, dim=1)
        choice = scores.detach() if expert_bias is None else scores.detach() + expert_bias
        chosen = self._choice(choice)  # the bias steers the choice only
        if self.record is not None:
            self.record.append(chosen.sort(dim=-1).values)
        weights = scores.gather(1, chosen)
        if a.route_norm:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + ROUTE_NORM_EPS)
        weights = weights * a.route_scale
        counts = torch.bincount(chosen.reshape(-1), minlength=a.num_experts)
        return weights, chosen, counts


class MoE(nn.Module):
    """Routed experts weighted after the experts (score_before_experts=False) plus shared
    experts; counts tokens per expert into `tokens_per_expert` for the bias update."""

    def __init__(self, args: ModelArgs, dtype: torch.dtype):
        super().__init__()
        self.args = args
        self.experts = GroupedExperts(args.dim, args.moe_inter_dim, args.num_experts, dtype)
        self.router = Router(args, dtype)
        self.shared_experts = (
            FeedForward(args.dim, args.moe_inter_dim * args.num_shared_experts, dtype)
            if args.num_shared_experts > 0 else None)
        if args.balancing:
            self.register_buffer("expert_bias", torch.zeros(args.num_experts, dtype=dtype))
        else:
            self.expert_bias = None
        self.register_buffer("tokens_per_expert",
                             torch.zeros(args.num_experts, dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        K = self.args.top_k
        x = x.reshape(-1, D)  # (N, D)
        weights, chosen, counts = self.router(x, self.expert_bias)
        with torch.no_grad():
            self.tokens_per_expert += counts
        # sort the N·K (token, slot) pairs by expert, stable so tokens keep their order
        order = torch.sort(chosen.reshape(-1), stable=True).indices  # (N·K,)
        routed = self.experts(x[order // K], counts.tolist())  # (N·K, D), expert-sorted
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        routed = routed[inverse].view(-1, K, D)  # (N, K, D) back in token order
        out = torch.bmm(weights.unsqueeze(1), routed).squeeze(1)  # Σ_k weight_k · expert_k(x)
        if self.shared_experts is not None:
            out = self.shared_experts(x) + out
        return out.view(B, T, D)


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs, dtype: torch.dtype, impl: str):
        super().__init__()
        self.attention = Attention(args, dtype, impl)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps, dtype)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps, dtype)
        self.moe_enabled = layer_id >= args.n_dense_layers
        if self.moe_enabled:
            self.moe = MoE(args, dtype)
        else:
            self.feed_forward = FeedForward(args.dim, args.inter_dim, dtype)
        self.layer_id = layer_id
        self.depth_std = INIT_STD / (2 * (layer_id + 1)) ** 0.5

    def forward(self, x, cos, sin, mask):
        x = x + self.attention(self.attention_norm(x), cos, sin, mask)
        ffn = self.moe if self.moe_enabled else self.feed_forward
        return x + ffn(self.ffn_norm(x))


class DeepSeekV3(nn.Module):
    """tokens (B, T) int64 -> logits (B, T, V)."""

    def __init__(self, args: ModelArgs, dtype: torch.dtype = torch.float64,
                 eos_id: Optional[int] = None, attention: str = "math"):
        super().__init__()
        args.validate()
        if attention == "sdpa" and not has_sdpa_with_scale():
            attention = "math"
        self.args, self.dtype, self.eos_id, self.attention_impl = args, dtype, eos_id, attention
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim, dtype=dtype)
        self.layers = nn.ModuleDict(
            {str(i): TransformerBlock(i, args, dtype, attention) for i in range(args.n_layers)})
        self.norm = RMSNorm(args.dim, args.final_norm_eps, dtype)
        self.output = linear(args.dim, args.vocab_size, dtype)
        angles = rope_angles(args)
        self.register_buffer("rope_cos", torch.cos(angles).to(dtype), persistent=False)
        self.register_buffer("rope_sin", torch.sin(angles).to(dtype), persistent=False)

    # -- parameters --

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """torchtitan's init_weights: embeddings N(0, 1); attention projections, w1 of every
        SwiGLU trunc-N(0, 0.02); wo, w2, w3, router gate, experts' w2/w3 trunc-N(0, 0.02 /
        sqrt(2·(layer_id + 1))) — all cut at ±2 absolute; output trunc-N(0, dim^-0.5) cut at ±3σ;
        norms ones; expert_bias zeros. Drawn in float32 (as torchtitan's trunc_normal_) in a
        fixed order, so a float32 and a float64 model from one seed agree up to rounding."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)

            def tn(p, std, a=-2.0, b=2.0):
                tmp = torch.empty(p.shape, dtype=torch.float32)
                nn.init.trunc_normal_(tmp, mean=0.0, std=std, a=a, b=b)
                p.copy_(tmp)

            tmp = torch.empty(self.tok_embeddings.weight.shape, dtype=torch.float32)
            nn.init.normal_(tmp)
            self.tok_embeddings.weight.copy_(tmp)
            for layer in self.layers.values():
                std = layer.depth_std
                att = layer.attention
                layer.attention_norm.weight.fill_(1.0)
                layer.ffn_norm.weight.fill_(1.0)
                att.kv_norm.weight.fill_(1.0)
                for lin in (att.wkv_a, att.wkv_b):
                    tn(lin.weight, INIT_STD)
                if self.args.q_lora_rank > 0:
                    att.q_norm.weight.fill_(1.0)
                    tn(att.wq_a.weight, INIT_STD)
                    tn(att.wq_b.weight, INIT_STD)
                else:
                    tn(att.wq.weight, INIT_STD)
                tn(att.wo.weight, std)
                ffns = []
                if layer.moe_enabled:
                    moe = layer.moe
                    tn(moe.experts.w1, INIT_STD)
                    tn(moe.experts.w2, std)
                    tn(moe.experts.w3, std)
                    tn(moe.router.gate.weight, std)
                    if moe.shared_experts is not None:
                        ffns.append(moe.shared_experts)
                    if moe.expert_bias is not None:
                        moe.expert_bias.zero_()
                    moe.tokens_per_expert.zero_()
                else:
                    ffns.append(layer.feed_forward)
                for ffn in ffns:
                    tn(ffn.w1.weight, INIT_STD)
                    tn(ffn.w2.weight, std)
                    tn(ffn.w3.weight, std)
            self.norm.weight.fill_(1.0)
            out_std = self.args.dim ** -0.5
            tn(self.output.weight, out_std, -OUTPUT_CUTOFF * out_std, OUTPUT_CUTOFF * out_std)

    def moe_layers(self) -> Dict[int, MoE]:
        return {int(i): l.moe for i, l in self.layers.items() if l.moe_enabled}

    def reset_counts(self) -> None:
        for moe in self.moe_layers().values():
            moe.tokens_per_expert.zero_()

    def counts(self) -> Dict[int, torch.Tensor]:
        """Tokens per expert (E,) int64 of each MoE layer since the last reset."""
        return {i: moe.tokens_per_expert.clone() for i, moe in self.moe_layers().items()}

    def min_routing_margin(self) -> float:
        return min([m.router.min_margin for m in self.moe_layers().values()] + [math.inf])

    def reset_routing_margin(self) -> None:
        for moe in self.moe_layers().values():
            moe.router.min_margin = math.inf

    # -- forward --

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, T = tokens.shape
        if T > self.args.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq_len {self.args.max_seq_len}")
        mask = attention_mask(tokens, self.args.attn_mask_type, self.eos_id)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        h = self.tok_embeddings(tokens)  # (B, T, D)
        for layer in self.layers.values():
            h = layer(h, cos, sin, mask)
        return self.output(self.norm(h))  # (B, T, V)


# ----------------------------------------------------------------------------------------------
# Loss, LR schedule, training step


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ over positions whose label is not -100 of −log softmax(logits)[label]."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(0, 1), reduction="sum",
                           ignore_index=IGNORE_INDEX)


@dataclass
class OptimizerConfig:
    lr: float = 8e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1


@dataclass
class LRSchedulerConfig:
    warmup_steps: int = 2
    decay_ratio: Optional[float] = None  # None: decay right after the warm-up
    decay_type: str = "linear"  # linear, sqrt, cosine
    min_lr_factor: float = 0.0
    total_steps: int = 10


def lr_lambda(cfg: LRSchedulerConfig):
    """The multiplier of the base LR at 0-based scheduler step s (torchtitan's
    linear_warmup_stable_decay with its phase lengths). LambdaLR evaluates it at s = 0 when it
    is built and at s + 1 after each step, so training step s (0-based) runs with lr · f(s)."""
    total = cfg.total_steps
    warmup = min(int(cfg.warmup_steps), total)
    if cfg.decay_ratio is not None:
        decay = min(round(total * cfg.decay_ratio), total - warmup)
    else:
        decay = total - warmup
    stable = total + 1 - warmup - decay  # one virtual step so the LR never reaches 0
    if cfg.decay_type not in ("linear", "sqrt", "cosine"):
        raise ValueError(f"decay_type {cfg.decay_type!r}")

    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        if s < warmup + stable:
            return 1.0
        progress = (s + 1 - (warmup + stable)) / decay
        if cfg.decay_type == "linear":
            adj = 1 - progress
        elif cfg.decay_type == "sqrt":
            adj = 1 - math.sqrt(progress)
        else:
            adj = 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * adj

    return f


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, sched: LRSchedulerConfig):
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            eps=cfg.eps, weight_decay=cfg.weight_decay, foreach=False)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(sched))


def clip_grad_norm(params: List[nn.Parameter], max_norm: float) -> torch.Tensor:
    """torch's clip_grad_norm_ (non-foreach): the global L2 norm, grads scaled by
    min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping."""
    kwargs = {}
    if "foreach" in inspect.signature(torch.nn.utils.clip_grad_norm_).parameters:
        kwargs["foreach"] = False
    return torch.nn.utils.clip_grad_norm_(params, max_norm, **kwargs)


@torch.no_grad()
def update_expert_bias(model: DeepSeekV3) -> None:
    """The optimizer pre-step hook of torchtitan's build_optimizers_with_moe_load_balancing:
    per MoE layer, n = tokens per expert over the step's micro-batches, delta = coeff ·
    sign(mean(n) − n), delta −= mean(delta), expert_bias += delta; then reset the counts."""
    coeff = model.args.load_balance_coeff
    for moe in model.moe_layers().values():
        if moe.expert_bias is None:
            return
        n = moe.tokens_per_expert.to(moe.expert_bias.dtype)
        delta = coeff * torch.sign(n.mean() - n)
        delta = delta - delta.mean()
        moe.expert_bias.add_(delta)
        moe.tokens_per_expert.zero_()


@dataclass
class StepResult:
    loss: float  # Σ over micro-batches of (CE sum / global label count)
    grad_norm: float  # before clipping
    lr: float  # the LR this step's update used
    grads: Optional[Dict[str, torch.Tensor]]  # before clipping, when asked
    counts: Dict[int, torch.Tensor]  # tokens per expert, summed over micro-batches
    logits0: Optional[torch.Tensor]  # micro-batch 0's logits, when asked


def train_step(model: DeepSeekV3, opt, sched, micro_batches, max_norm: float,
               keep_grads: bool = False, keep_logits: bool = False) -> StepResult:
    """One step as torchtitan's train_step: count the labels of the whole step, forward and
    backward each micro-batch with loss = CE sum / count (grads add up), clip by the global
    norm, update the expert biases (optimizer pre-step hook), AdamW, LR scheduler."""
    opt.zero_grad(set_to_none=True)
    lr = sched.get_last_lr()[0]
    n_labels = sum(int((labels != IGNORE_INDEX).sum()) for _, labels in micro_batches)
    if n_labels == 0:
        raise ValueError("a step with no labels")
    total = 0.0
    logits0 = None
    for j, (tokens, labels) in enumerate(micro_batches):
        logits = model(tokens)
        loss = cross_entropy_sum(logits, labels) / n_labels
        loss.backward()
        total += float(loss.detach())
        if keep_logits and j == 0:
            logits0 = logits.detach().clone()
        del logits
    grads = None
    if keep_grads:
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    counts = model.counts()
    norm = clip_grad_norm([p for p in model.parameters()], max_norm)
    update_expert_bias(model)
    model.reset_counts()  # also when balancing is off: counts are per step
    opt.step()
    sched.step()
    return StepResult(total, float(norm), lr, grads, counts, logits0)


# ----------------------------------------------------------------------------------------------
# Self-checks


def _tiny_args(**over) -> ModelArgs:
    base = dict(vocab_size=16, dim=8, inter_dim=12, moe_inter_dim=6, n_layers=2,
                n_dense_layers=1, n_heads=2, num_experts=4, num_shared_experts=1, top_k=2,
                q_lora_rank=0, kv_lora_rank=6, qk_nope_head_dim=4, qk_rope_head_dim=4,
                v_head_dim=4, max_seq_len=6, original_seq_len=4096, final_norm_eps=FLOAT32_EPS)
    base.update(over)
    return ModelArgs(**base)


def _check_gradcheck() -> None:
    """Autograd's gradients of the loss against central differences, in float64."""
    from torch.nn.utils import stateless

    variants = {
        "softmax/causal/q_lora 0": _tiny_args(),
        "sigmoid/groups/block_causal/q_lora 4/yarn": _tiny_args(
            q_lora_rank=4, score_func="sigmoid", route_norm=True, route_scale=2.5,
            num_experts=8, num_expert_groups=4, num_limited_groups=2, top_k=2,
            attn_mask_type="block_causal", num_shared_experts=0, original_seq_len=4,
            rope_factor=4.0, mscale=0.7, beta_fast=4, beta_slow=1, rope_theta=50.0),
    }
    for name, args in variants.items():
        for seed in range(20):
            model = DeepSeekV3(args, torch.float64, eos_id=3)
            model.init_weights(seed)
            g = torch.Generator().manual_seed(seed)
            tokens = torch.randint(0, args.vocab_size, (2, args.max_seq_len), generator=g)
            tokens[0, 2] = 3
            labels = torch.randint(0, args.vocab_size, (2, args.max_seq_len), generator=g)
            labels[1, 0] = IGNORE_INDEX
            for moe in model.moe_layers().values():  # route with a bias, as after some steps
                moe.expert_bias.copy_(0.01 * torch.randn(args.num_experts, generator=g))
            model.reset_routing_margin()
            model(tokens)
            if model.min_routing_margin() > 1e-4:  # finite differences must not flip a route
                break
        names = [n for n, _ in model.named_parameters()]
        values = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

        def fn(*ps):
            logits = stateless.functional_call(model, dict(zip(names, ps)), (tokens,))
            return cross_entropy_sum(logits, labels) / int((labels != IGNORE_INDEX).sum())

        t0 = time.time()
        ok = torch.autograd.gradcheck(fn, values, eps=1e-6, atol=1e-8, rtol=1e-5)
        n = sum(v.numel() for v in values)
        print(f"gradcheck {name}: {ok} ({n} parameters, seed {seed}, "
              f"margin {model.min_routing_margin():.2e}, {time.time() - t0:.1f} s)")


def _check_accumulation() -> None:
    """4 accumulated micro-batches of 2 == one batch of 8: loss, every grad, counts."""
    args = _tiny_args(max_seq_len=8, n_layers=3, attn_mask_type="block_causal")
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, args.vocab_size, (8, 8), generator=g)
    labels = torch.randint(0, args.vocab_size, (8, 8), generator=g)
    labels[torch.rand(8, 8, generator=g) < 0.2] = IGNORE_INDEX
    results = []
    for split in (4, 1):
        model = DeepSeekV3(args, torch.float64, eos_id=3)
        model.init_weights(1)
        opt, sched = build_optimizer(model, OptimizerConfig(), LRSchedulerConfig())
        mbs = list(zip(tokens.chunk(split), labels.chunk(split)))
        r = train_step(model, opt, sched, mbs, max_norm=1.0, keep_grads=True)
        results.append((r, {n: p.detach().clone() for n, p in model.named_parameters()},
                        {i: m.expert_bias.clone() for i, m in model.moe_layers().items()}))
    (a, pa, ba), (b, pb, bb) = results
    assert abs(a.loss - b.loss) <= 1e-12 * abs(b.loss), (a.loss, b.loss)
    assert abs(a.grad_norm - b.grad_norm) <= 1e-12 * b.grad_norm
    worst = max(float((a.grads[n] - b.grads[n]).abs().max()) for n in a.grads)
    assert worst < 1e-13, worst
    assert all(torch.equal(a.counts[i], b.counts[i]) for i in a.counts)
    assert all(torch.equal(ba[i], bb[i]) for i in ba)
    pworst = max(float((pa[n] - pb[n]).abs().max()) for n in pa)
    assert pworst < 1e-12, pworst
    print(f"accumulation: 4 x B=2 == 1 x B=8 (loss {a.loss:.12f} vs {b.loss:.12f}, "
          f"max grad diff {worst:.1e}, max param diff after the step {pworst:.1e})")


def _check_lr_schedule() -> None:
    """LambdaLR + lr_lambda: the LR each step uses, against the closed form in the docs."""
    base = 1e-3
    for cfg in (LRSchedulerConfig(3, None, "linear", 0.1, 8),
                LRSchedulerConfig(2, 0.5, "cosine", 0.0, 7),
                LRSchedulerConfig(0, 0.3, "sqrt", 0.2, 5)):
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=base)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
        used = []
        for _ in range(cfg.total_steps):
            used.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        for s in range(min(cfg.warmup_steps, cfg.total_steps)):
            want = base * (s + 1) / cfg.warmup_steps
            assert abs(used[s] - want) < 1e-15, (s, used[s], want)
        print(f"lr schedule {cfg.decay_type} warmup {cfg.warmup_steps} decay_ratio "
              f"{cfg.decay_ratio}: " + " ".join(f"{x:.3e}" for x in used))


def _check_learns() -> None:
    """Ten steps on one fixed batch lower its loss (the step, not only the gradient, works)."""
    args = _tiny_args(max_seq_len=8)
    g = torch.Generator().manual_seed(11)
    tokens = torch.randint(0, args.vocab_size, (2, 8), generator=g)
    labels = torch.randint(0, args.vocab_size, (2, 8), generator=g)
    model = DeepSeekV3(args, torch.float64)
    model.init_weights(2)
    opt, sched = build_optimizer(model, OptimizerConfig(lr=1e-2),
                                 LRSchedulerConfig(2, None, "linear", 0.1, 10))
    losses = [train_step(model, opt, sched, [(tokens, labels)], 1.0).loss for _ in range(10)]
    assert losses[-1] < 0.9 * losses[0], losses
    print(f"learning: loss {losses[0]:.4f} -> {losses[-1]:.4f} in 10 steps on one batch")


@torch.no_grad()
def _check_dtypes() -> None:
    """A float32 model from the same seed agrees with the float64 one (and sdpa with math)."""
    args = _tiny_args(max_seq_len=8)
    tokens = torch.randint(0, args.vocab_size, (2, 8), generator=torch.Generator().manual_seed(3))
    outs = {}
    for dtype, impl in ((torch.float64, "math"), (torch.float32, "math"), (torch.float32, "sdpa")):
        m = DeepSeekV3(args, dtype, attention=impl)
        m.init_weights(5)
        outs[(dtype, m.attention_impl)] = m(tokens).double()
    ref = outs[(torch.float64, "math")]
    for key, out in outs.items():
        err = float((out - ref).norm() / ref.norm())
        assert err < 1e-5, (key, err)
        print(f"dtype {key[0]} attention {key[1]}: relative error vs float64 {err:.1e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-gradcheck", action="store_true")
    ns = ap.parse_args(argv)
    torch.set_num_threads(1)
    _check_lr_schedule()
    _check_dtypes()
    _check_learns()
    _check_accumulation()
    if not ns.skip_gradcheck:
        _check_gradcheck()
    print("self-checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
