// kernels: the op library, one backend-neutral C API.
//
// Every op of the model has a forward and a backward. Tensors are dense, row-major fp32
// arrays on the CPU backend; each signature lists their shapes. Gradients of inputs ("d<x>")
// are WRITTEN unless the comment says added; gradients of weights are ADDED, so that
// micro-batches accumulate into the same buffer. Ops never keep state between calls; scratch
// memory comes from dsv3_alloc and is released before returning. All ops are multi-threaded
// through OpenBLAS (GEMMs) and OpenMP (the rest).
//
// A simple reference version of every op, written for clarity, lives beside the fast one
// (kernels_reference.h); the fast one is tested against it.
//
// This library knows nothing of the model: no layer, no config, no MPI.
//
// Legend: N tokens (B × T), B sequences, T positions, D model width, In/Out linear in/out
// features, V vocabulary, H heads, Dqk / Dv query-key / value head dims, R rotary dims,
// E experts, K experts per token, F expert hidden width, M = N × K routed rows.
#ifndef DSV3_KERNELS_KERNELS_H
#define DSV3_KERNELS_KERNELS_H

#include <stdint.h>

#include "common/core/error.h"

// Label of a position that does not count in the loss (PyTorch's ignore_index).
enum { DSV3_IGNORE_INDEX = -100 };

// ---- embedding ----

// out (N, D) = weight (V, D) rows tokens[n]; every token must be in [0, V).
Dsv3Err dsv3_embedding_forward(float *out, const int32_t *tokens, const float *weight, int64_t N,
                               int64_t D, int64_t V);
// dweight (V, D) += dout (N, D) scattered by tokens.
Dsv3Err dsv3_embedding_backward(float *dweight, const float *dout, const int32_t *tokens, int64_t N,
                                int64_t D, int64_t V);

// ---- RMSNorm (torch.nn.RMSNorm) ----

// out (N, D) = x · rstd · weight (D), rstd (N) = 1 / sqrt(mean(x²) + eps), saved for backward.
Dsv3Err dsv3_rmsnorm_forward(float *out, float *rstd, const float *x, const float *weight,
                             int64_t N, int64_t D, float eps);
// dx (N, D) written; dweight (D) added.
Dsv3Err dsv3_rmsnorm_backward(float *dx, float *dweight, const float *dout, const float *x,
                              const float *weight, const float *rstd, int64_t N, int64_t D);

// ---- linear (no bias; torch.nn.Linear's weight layout) ----

// out (N, Out) = x (N, In) · weight (Out, In)ᵀ.
Dsv3Err dsv3_linear_forward(float *out, const float *x, const float *weight, int64_t N, int64_t In,
                            int64_t Out);
// dx (N, In) = dout (N, Out) · weight, written (or added when accumulate_dx; skipped when dx is
// NULL); dweight (Out, In) += doutᵀ · x.
Dsv3Err dsv3_linear_backward(float *dx, float *dweight, const float *dout, const float *x,
                             const float *weight, int64_t N, int64_t In, int64_t Out,
                             int accumulate_dx);

// ---- rotary embedding on interleaved pairs, with YaRN ----

// cos, sin (T, R/2): angle t · freq_i, freq_i = theta^(−2i/R). When T > original_seq_len the
// frequencies get YaRN's correction (torchtitan's precompute_freqs_cis): between the
// correction dims of beta_fast and beta_slow they blend linearly from freq_i to freq_i /
// factor. T is the training seq_len.
Dsv3Err dsv3_rope_tables(float *cos, float *sin, int64_t T, int64_t R, double theta, double factor,
                         double beta_fast, double beta_slow, int64_t original_seq_len);
// In place on x: for token n = b·T + t and head h < H, the R channels starting at
// x + n·row_stride + h·head_stride hold pairs (x[2i], x[2i+1]) that rotate by angle (t, i).
Dsv3Err dsv3_rope_forward(float *x, const float *cos, const float *sin, int64_t B, int64_t T,
                          int64_t H, int64_t R, int64_t row_stride, int64_t head_stride);
// In place on dx (same layout): the gradient through the rotation (rotation by −angle).
Dsv3Err dsv3_rope_backward(float *dx, const float *cos, const float *sin, int64_t B, int64_t T,
                           int64_t H, int64_t R, int64_t row_stride, int64_t head_stride);

// ---- attention (scaled dot product, causal or block-causal) ----

// q (B, T, H, Dqk), k (B, T, H, Dqk), v (B, T, H, Dv) → out (B, T, H, Dv) and lse (B, H, T),
// the log-sum-exp of each query's scaled scores, saved for backward. Query t attends to key
// s when s ≤ t and, if doc (B, T) is not NULL, doc[b, s] == doc[b, t] (document ids of a
// block-causal mask). Softmax of scale · q·k, computed per head with an online softmax.
Dsv3Err dsv3_attention_forward(float *out, float *lse, const float *q, const float *k,
                               const float *v, const int32_t *doc, int64_t B, int64_t T, int64_t H,
                               int64_t Dqk, int64_t Dv, float scale);
// dq, dk (B, T, H, Dqk), dv (B, T, H, Dv) written.
Dsv3Err dsv3_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                const float *k, const float *v, const float *out, const float *lse,
                                const int32_t *doc, int64_t B, int64_t T, int64_t H, int64_t Dqk,
                                int64_t Dv, float scale);
// The same, trading memory for time: forward keeps the scaled, masked scores of the tiles it
// visits in scores (B, H, T, T) and backward reads them instead of recomputing q·kᵀ. Same
// results, bit for bit; worth it while B·H·T² floats fit comfortably in memory.
Dsv3Err dsv3_attention_forward_cached(float *out, float *lse, float *scores, const float *q,
                                      const float *k, const float *v, const int32_t *doc, int64_t B,
                                      int64_t T, int64_t H, int64_t Dqk, int64_t Dv, float scale);
Dsv3Err dsv3_attention_backward_cached(float *dq, float *dk, float *dv, const float *dout,
                                       const float *q, const float *k, const float *v,
                                       const float *out, const float *lse, const float *scores,
                                       const int32_t *doc, int64_t B, int64_t T, int64_t H,
                                       int64_t Dqk, int64_t Dv, float scale);

// ---- SwiGLU gate: h = silu(a) · b, with a = w1 x and b = w3 x ----

// h (N, F); may not alias a or b.
Dsv3Err dsv3_swiglu_forward(float *h, const float *a, const float *b, int64_t N, int64_t F);
// da, db (N, F) written; da may alias a and db may alias b.
Dsv3Err dsv3_swiglu_backward(float *da, float *db, const float *dh, const float *a, const float *b,
                             int64_t N, int64_t F);

// ---- MoE router (torchtitan's TokenChoiceTopKRouter) ----

typedef struct {
    int64_t num_experts;        // E
    int64_t top_k;              // K
    int64_t num_groups;         // expert groups for group-limited routing; 0: off
    int64_t num_limited_groups; // groups a token may use; 0: off
    int sigmoid;                // 1: sigmoid scores, 0: softmax over experts
    int route_norm;             // 1: the K weights of a token are renormalised to sum to one
    float route_scale;          // factor on the weights
} Dsv3RouterArgs;

// logits (N, E) = the gate's output. scores (N, E) = softmax or sigmoid of logits, saved.
// Choice: the K largest scores + expert_bias (E, or NULL) — restricted, when groups are on,
// to the num_limited_groups groups whose two best biased scores sum highest. topk_idx (N, K)
// the chosen experts; weights (N, K) their UNbiased scores (over their sum + 1e-20 when
// route_norm) × route_scale; counts (E) written: tokens per expert.
Dsv3Err dsv3_router_forward(float *scores, int32_t *topk_idx, float *weights, int64_t *counts,
                            const float *logits, const float *expert_bias, int64_t N,
                            const Dsv3RouterArgs *args);
// dlogits (N, E) written from dweights (N, K).
Dsv3Err dsv3_router_backward(float *dlogits, const float *dweights, const float *scores,
                             const int32_t *topk_idx, int64_t N, const Dsv3RouterArgs *args);

// ---- token permutation to experts and back ----

// Sorts the N × K assignments by expert, stably (ties keep token order): order (M) holds
// n·K + k of each routed row; offsets (E + 1) the first row of each expert (offsets[E] = M).
Dsv3Err dsv3_moe_plan(int32_t *order, int64_t *offsets, const int32_t *topk_idx, int64_t N,
                      int64_t K, int64_t E);
// xs (M, D) = x (N, D) rows order[j] / K.
Dsv3Err dsv3_moe_gather(float *xs, const float *x, const int32_t *order, int64_t M, int64_t K,
                        int64_t D);
// dx (N, D) += dxs (M, D) summed back onto their tokens (added).
Dsv3Err dsv3_moe_gather_backward(float *dx, const float *dxs, const int32_t *order, int64_t M,
                                 int64_t K, int64_t D);
// out (N, D) += Σ_k weights[n, k] · ys[row of (n, k)], ys (M, D) in the order of `order`.
Dsv3Err dsv3_moe_combine_forward(float *out, const float *ys, const float *weights,
                                 const int32_t *order, int64_t N, int64_t K, int64_t D);
// dys (M, D) written = weight · dout of its token; dweights (N, K) written = dout · ys.
Dsv3Err dsv3_moe_combine_backward(float *dys, float *dweights, const float *dout, const float *ys,
                                  const float *weights, const int32_t *order, int64_t N, int64_t K,
                                  int64_t D);

// ---- routed experts: grouped SwiGLU FFNs ----

// For expert e < E and its rows [offsets[e], offsets[e+1]) of xs (M, D), offsets[0] = 0:
// h1 = xs · w1[e]ᵀ, h3 = xs · w3[e]ᵀ (M, F) saved; ys (M, D) = (silu(h1) · h3) · w2[e]ᵀ.
// w1, w3 (E, F, D); w2 (E, D, F).
Dsv3Err dsv3_experts_forward(float *ys, float *h1, float *h3, const float *xs, const float *w1,
                             const float *w2, const float *w3, const int64_t *offsets, int64_t E,
                             int64_t D, int64_t F);
// dxs (M, D) written; dw1, dw3 (E, F, D) and dw2 (E, D, F) added.
Dsv3Err dsv3_experts_backward(float *dxs, float *dw1, float *dw2, float *dw3, const float *dys,
                              const float *xs, const float *h1, const float *h3, const float *w1,
                              const float *w2, const float *w3, const int64_t *offsets, int64_t E,
                              int64_t D, int64_t F);

// ---- output head fused with cross-entropy ----

// logits = h (N, D) · weight (V, D)ᵀ, in chunks of at most `chunk` tokens so that no more
// than chunk × V logits exist at once. loss_sum = Σ over n with labels[n] ≠ DSV3_IGNORE_INDEX
// of logsumexp(logits[n]) − logits[n, labels[n]], accumulated in double. When dh is not NULL:
// dh (N, D) written and dweight (V, D) added with the gradient of grad_scale × loss_sum.
// Labels must be DSV3_IGNORE_INDEX or in [0, V).
Dsv3Err dsv3_cross_entropy(double *loss_sum, float *dh, float *dweight, const float *h,
                           const float *weight, const int32_t *labels, int64_t N, int64_t D,
                           int64_t V, float grad_scale, int64_t chunk);

// ---- optimizer and clipping ----

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t step; // 1 on the first step (bias correction)
} Dsv3AdamWArgs;

// torch.optim.AdamW on n elements: param ·= 1 − lr·wd; m, v updated; param −= lr ·
// m̂ / (sqrt(v̂) + eps) with bias-corrected m̂, v̂.
Dsv3Err dsv3_adamw_step(float *param, const float *grad, float *m, float *v, int64_t n,
                        const Dsv3AdamWArgs *args);

// Σ x² over n elements, in double.
double dsv3_sum_squares(const float *x, int64_t n);

// x ·= factor over n elements.
void dsv3_scale(float *x, int64_t n, float factor);

#endif
