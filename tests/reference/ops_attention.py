#!/usr/bin/python3
"""PyTorch reference (float64) for the attention ops: the rotary tables with and without YaRN,
rotary embedding forward and backward on MLA's q_pe and k_pe, and causal / block-causal
scaled dot-product attention forward and backward.

Usage: python ops_attention.py CASE_DIR

Writes one sub-folder of CASE_DIR per case, each holding the inputs and the expected outputs
and gradients as .npy files, read by tests/numerics/test_ops_attention.c. The ops are computed
the way torchtitan's DeepSeek-V3 computes them: the tables by precompute_freqs_cis (here in
float64), the rotation by complex multiplication (torch.view_as_complex), attention as
softmax(q kᵀ · scale) v under a boolean mask (torch 1.13 has no scaled_dot_product_attention),
with document ids derived from EOS tokens as torchtitan's get_document_mask_mod does; every
gradient by autograd. Inputs are rounded to float32 before use, so the float64 expectation is
exact for the float32 inputs the C side reads. Sizes and integer settings go into dims.npy
(int64), float settings into params.npy (float64).
"""

import math
import sys

import numpy as np
import torch

from op_case import Case, float32_normals

SEED = 4321
EOS_ID = 0  # the end-of-sequence token of the document-mask cases
# torchtitan's DeepSeek-V3 defaults for the rotary embedding and YaRN.
ROPE_THETA = 10000.0
ROPE_FACTOR = 40.0
BETA_FAST = 32.0
BETA_SLOW = 1.0
MSCALE = 1.0

torch.set_default_dtype(torch.float64)
GEN = torch.Generator().manual_seed(SEED)


def randn(*shape, scale=1.0):
    return float32_normals(GEN, *shape, scale=scale)


# ---- rotary embedding ----

def rope_frequencies(rope_dim, seq_len, original_seq_len, theta=ROPE_THETA, factor=ROPE_FACTOR,
                     beta_fast=BETA_FAST, beta_slow=BETA_SLOW):
    """torchtitan's precompute_freqs_cis, in float64: complex (seq_len, rope_dim / 2)."""
    freqs = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float64) / rope_dim))
    if seq_len > original_seq_len:
        def correction_dim(rotations):
            return (rope_dim * math.log(original_seq_len / (rotations * 2 * math.pi))
                    / (2 * math.log(theta)))

        low = max(math.floor(correction_dim(beta_fast)), 0)
        high = min(math.ceil(correction_dim(beta_slow)), rope_dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(rope_dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), freqs)
    return torch.polar(torch.ones_like(angles), angles)


def rotate(x, freqs_cis):
    """torchtitan's apply_rotary_emb: x (B, T, H, R), pairs as complex numbers."""
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3)


def rope_tables(root, name, T, R, original_seq_len):
    c = Case(root, name)
    freqs_cis = rope_frequencies(R, T, original_seq_len)
    c.dims(T, R, original_seq_len)
    c.params(ROPE_THETA, ROPE_FACTOR, BETA_FAST, BETA_SLOW)
    c.save("cos", freqs_cis.real)
    c.save("sin", freqs_cis.imag)


def rope_query(root, name, B, T, H, nope, R, original_seq_len):
    """q (B, T, H, nope + R): RoPE on q_pe, the last R channels of every head."""
    c = Case(root, name)
    freqs_cis = rope_frequencies(R, T, original_seq_len)
    q = randn(B, T, H, nope + R).requires_grad_()
    dout = randn(B, T, H, nope + R)
    q_nope, q_pe = torch.split(q, [nope, R], dim=-1)
    out = torch.cat([q_nope, rotate(q_pe, freqs_cis)], dim=-1)
    out.backward(dout)
    # rows of H·(nope + R) floats; heads nope + R apart; rotated part at offset nope
    c.dims(B, T, H, R, H * (nope + R), nope + R, nope, original_seq_len)
    c.params(ROPE_THETA, ROPE_FACTOR, BETA_FAST, BETA_SLOW)
    for tensor_name, value in [("x", q), ("dout", dout), ("out", out), ("dx", q.grad)]:
        c.save(tensor_name, value)


def rope_key(root, name, B, T, L, R, original_seq_len):
    """kv (B, T, L + R), wkv_a's output: RoPE on k_pe, its last R channels, as one head."""
    c = Case(root, name)
    freqs_cis = rope_frequencies(R, T, original_seq_len)
    kv = randn(B, T, L + R).requires_grad_()
    dout = randn(B, T, L + R)
    latent, k_pe = torch.split(kv, [L, R], dim=-1)
    k_pe = rotate(k_pe.unsqueeze(2), freqs_cis).squeeze(2)
    out = torch.cat([latent, k_pe], dim=-1)
    out.backward(dout)
    c.dims(B, T, 1, R, L + R, R, L, original_seq_len)
    c.params(ROPE_THETA, ROPE_FACTOR, BETA_FAST, BETA_SLOW)
    for tensor_name, value in [("x", kv), ("dout", dout), ("out", out), ("dx", kv.grad)]:
        c.save(tensor_name, value)


# ---- attention ----

def document_ids(tokens):
    """torchtitan's get_document_mask_mod: an EOS belongs to the document it ends."""
    eos = tokens == EOS_ID
    eos[:, -1] = True
    ends = torch.cumsum(eos.to(torch.int64), dim=1)
    ids = torch.zeros_like(ends)
    ids[:, 1:] = ends[:, :-1]
    return ids


def attention(root, name, B, T, H, Dqk, Dv, eos_rate=None, yarn=False):
    c = Case(root, name)
    scale = Dqk ** -0.5
    if yarn:  # torchtitan's softmax factor when training past original_seq_len
        mscale = 0.1 * MSCALE * math.log(ROPE_FACTOR) + 1.0
        scale = scale * mscale * mscale
    q = randn(B, T, H, Dqk, scale=1.5).requires_grad_()
    k = randn(B, T, H, Dqk, scale=1.5).requires_grad_()
    v = randn(B, T, H, Dv).requires_grad_()
    dout = randn(B, T, H, Dv)
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None, None]  # (1, 1, T, T): key <= query
    doc = None
    if eos_rate is not None:
        tokens = torch.randint(1, 100, (B, T), generator=GEN)
        tokens[torch.rand(B, T, generator=GEN) < eos_rate] = EOS_ID
        doc = document_ids(tokens)
        mask = mask & (doc[:, None, :, None] == doc[:, None, None, :])  # (B, 1, T, T)
    # (B, H, T, D) as in torchtitan's attention call
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    scores = torch.matmul(qt, kt.transpose(-2, -1)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, T)
    out = torch.matmul(torch.softmax(scores, dim=-1), vt).transpose(1, 2)  # (B, T, H, Dv)
    out.backward(dout)
    c.dims(B, T, H, Dqk, Dv, 0 if doc is None else 1)
    c.params(scale)
    if doc is not None:
        c.save("doc", doc, np.int32)
    for tensor_name, value in [("q", q), ("k", k), ("v", v), ("dout", dout), ("out", out),
                               ("lse", lse), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)]:
        c.save(tensor_name, value)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: ops_attention.py CASE_DIR")
    root = sys.argv[1]
    rope_tables(root, "rope_tables_plain", 70, 64, 4096)  # T <= original_seq_len: no YaRN
    rope_tables(root, "rope_tables_one", 1, 2, 4096)
    rope_tables(root, "rope_tables_yarn", 129, 64, 32)  # T > original_seq_len: YaRN
    rope_tables(root, "rope_tables_yarn_clamped", 300, 8, 100)
    rope_query(root, "rope_query", 2, 7, 3, 16, 8, 4096)
    rope_query(root, "rope_query_yarn", 1, 70, 16, 128, 64, 32)
    rope_key(root, "rope_key", 2, 9, 12, 8, 4096)
    rope_key(root, "rope_key_yarn", 1, 129, 512, 64, 64)
    attention(root, "attention_one_token", 1, 1, 2, 24, 16)
    attention(root, "attention_causal", 2, 7, 3, 24, 16)
    attention(root, "attention_causal_ragged", 2, 129, 2, 24, 16)
    attention(root, "attention_documents", 1, 70, 2, 24, 16, eos_rate=0.1)
    attention(root, "attention_documents_ragged", 2, 129, 2, 24, 16, eos_rate=0.02)
    attention(root, "attention_mla", 1, 130, 16, 192, 128, yarn=True)
    attention(root, "attention_mla_documents", 1, 200, 4, 192, 128, eos_rate=0.01)


if __name__ == "__main__":
    main()
