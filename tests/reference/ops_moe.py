#!/usr/bin/python3
"""PyTorch reference (float64) for the MoE ops: router, token permutation, routed experts,
and a whole routed MoE block.

Usage: python ops_moe.py CASE_DIR

Writes one sub-folder of CASE_DIR per case, each holding the inputs and the expected outputs
and gradients as .npy files, read by tests/numerics/test_ops_moe.c. The ops are computed the
way torchtitan's torchtitan/models/moe/moe.py computes them (TokenChoiceTopKRouter,
TokenReorderer, GroupedExperts._run_experts_for_loop, MoE.forward with
score_before_experts=False): softmax / sigmoid, topk, gather, histc, argsort(stable=True),
index ops and bmm, with gradients by autograd. Everything runs in float64, where torchtitan
forces float32 for the router scores. Inputs are rounded to float32 before use, so the
expectation is exact for the float32 inputs the C side reads. Sizes and integer settings go
into dims.npy (int64), float settings into params.npy (float64).

The order of a token's K experts is unspecified (torch.topk(sorted=False)), so router outputs
are written per expert: `chosen` (N, E) is 1 where the token chose the expert, `weights_dense`
(N, E) holds the weight there. The router's backward takes its upstream gradient the same way:
dweights[n, k] = g[n, expert of (n, k)] for a dense g (N, E).
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

from op_case import Case, float32_normals

SEED = 4321

# Smallest gap, in the scores the choice compares, between the last expert (or group) kept and
# the first one left out: float32 rounding on the C side must not change the choice.
CHOICE_MARGIN = 1e-4

torch.set_default_dtype(torch.float64)
GEN = torch.Generator().manual_seed(SEED)


def randn(*shape, scale=1.0):
    return float32_normals(GEN, *shape, scale=scale)


def rand_uniform(*shape, low=0.0, high=1.0):
    return (low + (high - low) * torch.rand(*shape, generator=GEN)).float().double()


class RouterArgs:
    def __init__(self, E, K, G=0, L=0, sigmoid=False, route_norm=False, route_scale=1.0):
        self.E, self.K, self.G, self.L = E, K, G, L
        self.sigmoid, self.route_norm, self.route_scale = sigmoid, route_norm, route_scale


def scores_for_choice_of(logits, bias, a):
    """The scores torchtitan's router compares: (N, E), −inf outside the kept groups; and the
    smallest gap around every cut the choice makes (groups, then top-k)."""
    scores = torch.sigmoid(logits) if a.sigmoid else F.softmax(logits, dim=1)
    choice = scores if bias is None else scores + bias
    gap = float("inf")
    if a.G > 0:
        grouped = choice.view(-1, a.G, a.E // a.G)
        group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1)
        if a.L < a.G:
            ranked = group_scores.sort(dim=-1, descending=True)[0]
            gap = min(gap, float((ranked[:, a.L - 1] - ranked[:, a.L]).min()))
        _, group_idx = torch.topk(group_scores, k=a.L, dim=-1, sorted=False)
        group_mask = torch.ones_like(group_scores, dtype=torch.bool)
        group_mask.scatter_(1, group_idx, False)  # False: kept
        choice = grouped.masked_fill(group_mask.unsqueeze(-1), float("-inf")).view(-1, a.E)
    if a.K < a.E:
        ranked = choice.sort(dim=-1, descending=True)[0]
        finite = torch.isfinite(ranked[:, a.K])
        if bool(finite.any()):
            gap = min(gap, float((ranked[:, a.K - 1] - ranked[:, a.K])[finite].min()))
    return choice, gap


def router(logits, bias, a):
    """TokenChoiceTopKRouter.forward after the gate: top_scores (N, K), indices (N, K), counts."""
    scores = torch.sigmoid(logits) if a.sigmoid else F.softmax(logits, dim=1)
    choice, _ = scores_for_choice_of(logits, bias, a)
    _, idx = torch.topk(choice, k=a.K, dim=-1, sorted=False)
    top_scores = scores.gather(dim=1, index=idx)
    if a.route_norm:
        top_scores = top_scores / (top_scores.sum(dim=-1, keepdim=True) + 1e-20)
    top_scores = top_scores * a.route_scale
    # torchtitan: histc of the indices (on float here: torch 1.13 has no integer histc on CPU).
    counts = torch.histc(idx.view(-1).double(), bins=a.E, min=0, max=a.E)
    return scores, top_scores, idx, counts


def draw_logits(N, bias, a, scale):
    """Random logits whose choice is at least CHOICE_MARGIN away from a tie."""
    for _ in range(1000):
        logits = randn(N, a.E, scale=scale)
        if scores_for_choice_of(logits, bias, a)[1] > CHOICE_MARGIN:
            return logits
    raise RuntimeError("no logits with a clear choice; lower CHOICE_MARGIN")


def save_router_args(c, N, a, D=0, Fh=0):
    """dims: N, E, K, G, L, sigmoid, route_norm, then D and F for a whole block."""
    c.dims(N, a.E, a.K, a.G, a.L, int(a.sigmoid), int(a.route_norm), D, Fh)
    c.params(a.route_scale)


def router_case(root, name, N, a, bias_scale):
    c = Case(root, name)
    bias = randn(a.E, scale=bias_scale) if bias_scale > 0 else None
    logits = draw_logits(N, bias, a, scale=2.0).requires_grad_()
    scores, top_scores, idx, counts = router(logits, bias, a)
    if bias is not None:  # the bias must matter, or the case would not test it
        _, _, idx_unbiased, _ = router(logits.detach(), None, a)
        assert not torch.equal(idx.sort(dim=1)[0], idx_unbiased.sort(dim=1)[0]), name
    g = randn(N, a.E)  # upstream gradient per (token, expert)
    (top_scores * g.gather(1, idx)).sum().backward()
    chosen = torch.zeros(N, a.E).scatter(1, idx, 1.0)
    weights_dense = torch.zeros(N, a.E).scatter(1, idx, top_scores.detach())
    save_router_args(c, N, a)
    c.save("logits", logits)
    c.save("expert_bias", bias if bias is not None else torch.zeros(a.E))
    c.save("has_bias", np.array([int(bias is not None)]), np.int64)
    c.save("g", g)
    c.save("scores", scores)
    c.save("chosen", chosen, np.int32)
    c.save("weights_dense", weights_dense)
    c.save("counts", counts, np.int64)
    c.save("dlogits", logits.grad)


def reorder(idx, K):
    """TokenReorderer: the stable sort of the flattened choices, and tokens per expert."""
    order = torch.argsort(idx.view(-1), stable=True)
    return order, order // K


def permute_case(root):
    N, K, E, D = 45, 3, 8, 20
    c = Case(root, "permute")
    idx = torch.stack([torch.randperm(E, generator=GEN)[:K] for _ in range(N)])
    idx[3] = idx[4]  # tokens with the same experts
    x = randn(N, D).requires_grad_()
    weights = rand_uniform(N, K).requires_grad_()
    ys = randn(N * K, D).requires_grad_()  # expert outputs, in the order of the plan
    dxs, dout = randn(N * K, D), randn(N, D)
    out0, dx0 = randn(N, D), randn(N, D)  # the combine and the gather backward add onto these
    order, token_of_row = reorder(idx, K)
    counts = torch.histc(idx.view(-1).double(), bins=E, min=0, max=E).long()
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    xs = x[token_of_row]
    xs.backward(dxs)
    # MoE.forward: unsort the expert outputs, then bmm with the weights.
    unsorted = torch.zeros(N * K, D)
    unsorted[order] = ys
    out = torch.bmm(weights.reshape(-1, 1, K), unsorted.reshape(-1, K, D)).squeeze(1)
    out.backward(dout)
    c.dims(N, K, E, D)
    c.save("topk_idx", idx, np.int32)
    for name, value in [("x", x), ("weights", weights), ("ys", ys), ("dxs", dxs), ("dout", dout),
                        ("out0", out0), ("dx0", dx0), ("xs", xs), ("dx", dx0 + x.grad),
                        ("out", out0 + out), ("dys", ys.grad), ("dweights", weights.grad)]:
        c.save(name, value)
    c.save("order", order, np.int32)
    c.save("offsets", offsets, np.int64)


def run_experts(w1, w2, w3, x, counts):
    """GroupedExperts._run_experts_for_loop, also returning h1 and h3 (what the C op saves)."""
    outs, h1s, h3s = [], [], []
    for e, x_e in enumerate(torch.split(x, counts.tolist(), dim=0)):
        h1 = torch.matmul(x_e, w1[e].transpose(-2, -1))
        h3 = torch.matmul(x_e, w3[e].transpose(-2, -1))
        outs.append(torch.matmul(F.silu(h1) * h3, w2[e].transpose(-2, -1)))
        h1s.append(h1)
        h3s.append(h3)
    return torch.cat(outs, dim=0), torch.cat(h1s, dim=0), torch.cat(h3s, dim=0)


def experts_case(root, name, counts, D, Fh):
    c = Case(root, name)
    E = len(counts)
    counts = torch.tensor(counts)
    M = int(counts.sum())
    xs = randn(M, D).requires_grad_()
    w1 = randn(E, Fh, D, scale=D ** -0.5).requires_grad_()
    w3 = randn(E, Fh, D, scale=D ** -0.5).requires_grad_()
    w2 = randn(E, D, Fh, scale=Fh ** -0.5).requires_grad_()
    dys = randn(M, D)
    dw10, dw20, dw30 = randn(E, Fh, D), randn(E, D, Fh), randn(E, Fh, D)  # added onto
    ys, h1, h3 = run_experts(w1, w2, w3, xs, counts)
    ys.backward(dys)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    c.dims(E, D, Fh, M)
    c.save("offsets", offsets, np.int64)
    for name_, value in [("xs", xs), ("w1", w1), ("w2", w2), ("w3", w3), ("dys", dys),
                         ("dw10", dw10), ("dw20", dw20), ("dw30", dw30), ("ys", ys),
                         ("h1", h1), ("h3", h3), ("dxs", xs.grad), ("dw1", dw10 + w1.grad),
                         ("dw2", dw20 + w2.grad), ("dw3", dw30 + w3.grad)]:
        c.save(name_, value)


def moe_block_case(root, name, N, D, Fh, a, bias_scale):
    """MoE.forward's routed part (no shared experts), score_before_experts=False."""
    c = Case(root, name)
    bias = randn(a.E, scale=bias_scale) if bias_scale > 0 else None
    gate = randn(a.E, D, scale=D ** -0.5)
    for _ in range(1000):  # inputs whose choice is clear of ties (see CHOICE_MARGIN)
        x = randn(N, D)
        if scores_for_choice_of(F.linear(x, gate), bias, a)[1] > CHOICE_MARGIN:
            break
    else:
        raise RuntimeError("no input with a clear choice")
    x.requires_grad_()
    gate.requires_grad_()
    w1 = randn(a.E, Fh, D, scale=D ** -0.5).requires_grad_()
    w3 = randn(a.E, Fh, D, scale=D ** -0.5).requires_grad_()
    w2 = randn(a.E, D, Fh, scale=Fh ** -0.5).requires_grad_()
    dout = randn(N, D)

    _, top_scores, idx, counts = router(F.linear(x, gate), bias, a)
    order, token_of_row = reorder(idx, a.K)
    routed_input = x[token_of_row]
    routed_output, _, _ = run_experts(w1, w2, w3, routed_input, counts.long())
    unsorted = torch.zeros(N * a.K, D)
    unsorted[order] = routed_output
    out = torch.bmm(top_scores.reshape(-1, 1, a.K), unsorted.reshape(-1, a.K, D)).squeeze(1)
    out.backward(dout)

    save_router_args(c, N, a, D, Fh)
    c.save("has_bias", np.array([int(bias is not None)]), np.int64)
    c.save("expert_bias", bias if bias is not None else torch.zeros(a.E))
    c.save("counts", counts, np.int64)
    for name_, value in [("x", x), ("gate", gate), ("w1", w1), ("w2", w2), ("w3", w3),
                         ("dout", dout), ("out", out), ("dx", x.grad), ("dgate", gate.grad),
                         ("dw1", w1.grad), ("dw2", w2.grad), ("dw3", w3.grad)]:
        c.save(name_, value)


def main():
    root = sys.argv[1]
    # name, N, router arguments, scale of the expert bias (0: none)
    router_case(root, "router_softmax", 37, RouterArgs(8, 3), 0.0)
    router_case(root, "router_softmax_bias", 64, RouterArgs(8, 3), 0.1)
    router_case(root, "router_sigmoid", 40, RouterArgs(16, 4, sigmoid=True), 0.0)
    router_case(root, "router_sigmoid_bias_norm", 50,
                RouterArgs(16, 4, sigmoid=True, route_norm=True, route_scale=2.5), 0.3)
    router_case(root, "router_softmax_norm_scale", 30,
                RouterArgs(8, 2, route_norm=True, route_scale=16.0), 0.0)
    router_case(root, "router_groups", 60,
                RouterArgs(16, 4, G=4, L=2, sigmoid=True, route_norm=True, route_scale=2.5), 0.3)
    router_case(root, "router_groups_softmax", 45, RouterArgs(16, 4, G=4, L=2), 0.05)
    router_case(root, "router_k1", 25, RouterArgs(8, 1), 0.0)
    router_case(root, "router_n1", 1, RouterArgs(8, 3, sigmoid=True), 0.0)
    permute_case(root)
    experts_case(root, "experts", [5, 0, 13, 1, 9], 24, 40)
    experts_case(root, "experts_one_row", [1], 7, 5)
    moe_block_case(root, "moe_softmax", 48, 32, 24, RouterArgs(8, 3), 0.0)
    moe_block_case(root, "moe_groups", 40, 24, 16,
                   RouterArgs(16, 4, G=4, L=2, sigmoid=True, route_norm=True, route_scale=2.5),
                   0.3)


if __name__ == "__main__":
    main()
