#!/usr/bin/python3
"""PyTorch reference (float64) for the dense ops: embedding, RMSNorm, linear, SwiGLU, the
output head fused with cross-entropy, AdamW, and clipping by the global gradient norm.

Usage: python ops_dense.py CASE_DIR

Writes one sub-folder of CASE_DIR per case, each holding the inputs and the expected outputs
and gradients as .npy files, read by tests/numerics/test_ops_dense.c. Every op is computed the
way PyTorch / torchtitan computes it (torch.nn.functional, torch.optim.AdamW,
torch.nn.utils.clip_grad_norm_), gradients by autograd. Inputs are rounded to float32 before
use, so the float64 expectation is exact for the float32 inputs the C side reads. Sizes and
integer settings go into dims.npy (int64), float settings into params.npy (float64).
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

from op_case import Case, float32_normals

SEED = 1234
IGNORE_INDEX = -100

torch.set_default_dtype(torch.float64)
GEN = torch.Generator().manual_seed(SEED)


def randn(*shape, scale=1.0):
    return float32_normals(GEN, *shape, scale=scale)


def randint(low, high, shape):
    return torch.randint(low, high, shape, generator=GEN)


def embedding(root):
    N, D, V = 40, 16, 50
    c = Case(root, "embedding")
    weight = randn(V, D).requires_grad_()
    tokens = randint(0, V, (N,))
    tokens[5] = tokens[17] = tokens[30]  # a token that repeats: the backward must sum
    dout = randn(N, D)
    dweight0 = randn(V, D)  # gradients of weights are added to what is there
    out = F.embedding(tokens, weight)
    out.backward(dout)
    c.dims(N, D, V)
    c.save("tokens", tokens, np.int32)
    for name, value in [("weight", weight), ("dout", dout), ("dweight0", dweight0),
                        ("out", out), ("dweight", dweight0 + weight.grad)]:
        c.save(name, value)


def rmsnorm(root):
    # torch 1.13 has no nn.RMSNorm: this is its formula, written with plain ops.
    N, D, eps = 24, 64, 1e-6
    c = Case(root, "rmsnorm")
    x = randn(N, D, scale=3.0).requires_grad_()
    weight = (1.0 + randn(D, scale=0.1)).float().double().requires_grad_()
    dout = randn(N, D)
    dweight0 = randn(D)
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
    out.backward(dout)
    c.dims(N, D)
    c.params(eps)
    for name, value in [("x", x), ("weight", weight), ("dout", dout), ("dweight0", dweight0),
                        ("out", out), ("rstd", rstd.squeeze(-1)), ("dx", x.grad),
                        ("dweight", dweight0 + weight.grad)]:
        c.save(name, value)


def linear(root):
    N, I, O = 33, 48, 20
    c = Case(root, "linear")
    x = randn(N, I).requires_grad_()
    weight = randn(O, I, scale=I ** -0.5).requires_grad_()
    dout = randn(N, O)
    dx0 = randn(N, I)  # for the accumulate_dx variant
    dweight0 = randn(O, I)
    out = F.linear(x, weight)
    out.backward(dout)
    c.dims(N, I, O)
    for name, value in [("x", x), ("weight", weight), ("dout", dout), ("dx0", dx0),
                        ("dweight0", dweight0), ("out", out), ("dx", x.grad),
                        ("dx_accumulated", dx0 + x.grad), ("dweight", dweight0 + weight.grad)]:
        c.save(name, value)


def swiglu(root):
    N, Fh = 16, 40
    c = Case(root, "swiglu")
    a = randn(N, Fh, scale=3.0)
    a[0, :6] = torch.tensor([-100.0, -30.0, -10.0, 10.0, 30.0, 100.0])  # the tails of σ
    a.requires_grad_()
    b = randn(N, Fh).requires_grad_()
    dh = randn(N, Fh)
    h = F.silu(a) * b
    h.backward(dh)
    c.dims(N, Fh)
    for name, value in [("a", a), ("b", b), ("dh", dh), ("h", h), ("da", a.grad),
                        ("db", b.grad)]:
        c.save(name, value)


def cross_entropy(root, name, N, D, V, chunk, ignored):
    """torchtitan's loss (F.cross_entropy, reduction 'sum', ignore_index -100) on the output
    head's logits h · Wᵀ; the gradients are those of grad_scale × loss_sum."""
    c = Case(root, name)
    h = randn(N, D).requires_grad_()
    weight = randn(V, D, scale=2.0 * D ** -0.5).requires_grad_()
    labels = randint(0, V, (N,))
    labels[ignored] = IGNORE_INDEX
    counted = int((labels != IGNORE_INDEX).sum())
    grad_scale = float(np.float32(1.0 / max(counted, 1)))  # the trainer's 1 / token count
    dweight0 = randn(V, D, scale=0.01)
    loss_sum = F.cross_entropy(h @ weight.T, labels, reduction="sum", ignore_index=IGNORE_INDEX)
    (grad_scale * loss_sum).backward()
    c.dims(N, D, V, chunk)
    c.params(grad_scale)
    c.save("labels", labels, np.int32)
    for n, value in [("h", h), ("weight", weight), ("dweight0", dweight0),
                     ("loss_sum", loss_sum.reshape(1)), ("dh", h.grad),
                     ("dweight", dweight0 + weight.grad)]:
        c.save(n, value)


def adamw(root):
    """torch.optim.AdamW, single-tensor path, on float64 parameters with given gradients; the
    learning rate changes every step as under a schedule."""
    n, steps = 1000, 5
    lrs = [1e-3, 2e-3, 3e-3, 2.5e-3, 1e-3]
    beta1, beta2, eps, weight_decay = 0.9, 0.95, 1e-8, 0.1
    c = Case(root, "adamw")
    param = randn(n).requires_grad_()
    c.save("param_init", param)
    opt = torch.optim.AdamW([param], lr=lrs[0], betas=(beta1, beta2), eps=eps,
                            weight_decay=weight_decay, foreach=False)
    for s in range(steps):
        grad = randn(n, scale=0.1 * (s + 1))
        grad[:10] = 0.0  # v stays 0 there: the update is 0 / (0 + eps)
        opt.param_groups[0]["lr"] = lrs[s]
        param.grad = grad.clone()
        opt.step()
        state = opt.state[param]
        c.save(f"grad{s}", grad)
        c.save(f"param{s}", param)
        c.save(f"m{s}", state["exp_avg"])
        c.save(f"v{s}", state["exp_avg_sq"])
    c.dims(n, steps)
    c.params(beta1, beta2, eps, weight_decay, *lrs)


def clip(root, name, max_norm):
    """torch.nn.utils.clip_grad_norm_ over several tensors: one global L2 norm, one factor."""
    sizes = [100, 37, 1000]
    c = Case(root, name)
    params = []
    for i, size in enumerate(sizes):
        p = torch.zeros(size, requires_grad=True)
        p.grad = randn(size, scale=0.1)
        c.save(f"grad{i}", p.grad)
        params.append(p)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    for i, p in enumerate(params):
        c.save(f"clipped{i}", p.grad)
    c.save("total_norm", total.reshape(1))
    c.dims(len(sizes), *sizes)
    c.params(max_norm)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: ops_dense.py CASE_DIR")
    root = sys.argv[1]
    embedding(root)
    rmsnorm(root)
    linear(root)
    swiglu(root)
    # name, N, D, V, chunk, positions whose label is ignored
    cross_entropy(root, "ce_v2048", 37, 16, 2048, 8, [3, 4, 20])
    cross_entropy(root, "ce_v5000", 45, 24, 5000, 16, [0, 44])  # 45 = 2 × 16 + 13
    cross_entropy(root, "ce_chunk_over_n", 20, 8, 300, 64, [])
    cross_entropy(root, "ce_all_ignored", 10, 8, 100, 4, list(range(10)))
    adamw(root)
    clip(root, "clip_active", 1.0)  # the gradients' norm is about 3.4: scaled down
    clip(root, "clip_idle", 100.0)  # far above the norm: unchanged
    print(f"ops_dense: cases written to {root}")


if __name__ == "__main__":
    main()
