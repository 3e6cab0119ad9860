// checks: the argument checks of kernels.h's ops that every backend shares — sizes, scalars and
// pointers, never the values inside a tensor (a backend may hold its tensors in device memory).
//
// Each check returns DSV3_ERR_USAGE with the message a caller of kernels.h sees, whatever the
// backend, and computes nothing; an op calls it after checking its dtype, before any work.
// Tensors are `const void *` (fp32, bf16 or integer alike): only whether one is NULL matters.
// The one check that reads values, dsv3_check_experts_offsets, reads them in host memory (the
// CUDA backend copies the offsets to the host first).
//
// Not here: the values a CPU op checks before any work and a CUDA kernel records as a data
// fault instead (labels, token ids, expert indices, permutation entries, query positions:
// kernels/cpu/checks.h and the kernels of kernels/cuda/), the dtypes each backend computes in,
// and the limits of a backend's own kernels. Shapes and legends are those of kernels.h.
#ifndef DSV3_KERNELS_CHECKS_H
#define DSV3_KERNELS_CHECKS_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"
#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" { // the CUDA backend (C++) calls them too
#endif

// ---- dense: optimizer, cross-entropy, embedding, linear, rmsnorm (checks_dense.c) ----

// torch.optim.AdamW's own argument checks, plus step >= 1 (the bias corrections divide by
// 1 − β^step); the pointers only when n > 0.
Dsv3Err dsv3_check_adamw(const void *param, const void *grad, const void *m, const void *v,
                         int64_t n, const Dsv3AdamWArgs *args);
// n >= 0; out always, x when n > 0.
Dsv3Err dsv3_check_sum_squares(const void *out, const void *x, int64_t n);
// n >= 0; x when n > 0.
Dsv3Err dsv3_check_scale(const void *x, int64_t n);

// Sizes and pointers (the gradients' when dh is wanted); not the labels.
Dsv3Err dsv3_check_cross_entropy(const void *loss_sum, const void *dh, const void *dweight,
                                 const void *h, const void *weight, const void *labels, int64_t N,
                                 int64_t D, int64_t V, int64_t chunk);
Dsv3Err dsv3_check_cross_entropy_logits(const void *loss_sum, const void *logits,
                                        const void *labels, int64_t N, int64_t V);

// Sizes, the slice [vocab_start, vocab_start + V) of the table and, when N > 0, the two tensors
// a and b (named in the messages) and tokens; not the token ids.
Dsv3Err dsv3_check_embedding(const void *a, const char *a_name, const void *tokens, const void *b,
                             const char *b_name, int64_t N, int64_t D, int64_t V,
                             int64_t vocab_start);

// The vocabulary-parallel cross-entropy: sizes, the slice [vocab_start, vocab_start + V), the
// pointers when n > 0 (those of the gradients when dh is wanted); not the labels.
Dsv3Err dsv3_check_vocab_logits(const void *logits, const void *row_max, const void *h,
                                const void *weight, int64_t n, int64_t D, int64_t V);
Dsv3Err dsv3_check_vocab_logits_sums(const void *sums, const void *logits, const void *row_max,
                                     const void *labels, int64_t n, int64_t V, int64_t vocab_start);
Dsv3Err dsv3_check_vocab_logits_backward(const void *loss_sum, const void *dh, const void *dweight,
                                         const void *logits, const void *row_max, const void *sums,
                                         const void *h, const void *weight, const void *labels,
                                         int64_t n, int64_t D, int64_t V, int64_t vocab_start);

// N >= 0, In, Out > 0; the pointers when N > 0 (backward: at least one of dx and dweight, and
// what each needs).
Dsv3Err dsv3_check_linear_forward(const void *out, const void *x, const void *weight, int64_t N,
                                  int64_t In, int64_t Out);
Dsv3Err dsv3_check_linear_backward(const void *dx, const void *dweight, const void *dout,
                                   const void *x, const void *weight, int64_t N, int64_t In,
                                   int64_t Out);

// N >= 0, D > 0 (forward: eps >= 0); the pointers when N > 0.
Dsv3Err dsv3_check_rmsnorm_forward(const void *out, const void *rstd, const void *x,
                                   const void *weight, int64_t N, int64_t D, float eps);
Dsv3Err dsv3_check_rmsnorm_backward(const void *dx, const void *dweight, const void *dout,
                                    const void *x, const void *weight, const void *rstd, int64_t N,
                                    int64_t D);

// ---- element-wise, copies, conversion and memory (checks_elementwise.c) ----

// n >= 0; the pointers when n > 0.
Dsv3Err dsv3_check_add(const void *out, const void *a, const void *b, int64_t n);
// rows, cols >= 0, both strides >= cols; the pointers when rows × cols > 0.
Dsv3Err dsv3_check_copy_columns(const void *dst, int64_t dst_stride, const void *src,
                                int64_t src_stride, int64_t rows, int64_t cols);
// n >= 0; when n > 0 the pointers, and dst and src do not overlap. The dtypes are f32 or bf16,
// checked before by the backend (which pairs it converts is its own).
Dsv3Err dsv3_check_convert(const void *dst, Dsv3TensorDtype dst_dtype, const void *src,
                           Dsv3TensorDtype src_dtype, int64_t n);
// N >= 0, F > 0; the pointers when N > 0.
Dsv3Err dsv3_check_swiglu_forward(const void *h, const void *a, const void *b, int64_t N,
                                  int64_t F);
Dsv3Err dsv3_check_swiglu_backward(const void *da, const void *db, const void *dh, const void *a,
                                   const void *b, int64_t N, int64_t F);

// kind is a Dsv3CopyKind; the pointers when bytes > 0.
Dsv3Err dsv3_check_memory_copy(const void *dst, const void *src, size_t bytes, Dsv3CopyKind kind);
// dst when bytes > 0.
Dsv3Err dsv3_check_memory_zero(const void *dst, size_t bytes);

// ---- token bookkeeping (checks_tokens.c) ----

// N >= 0, 0 < V <= 2^31 (int32 ids); tokens when N > 0. The ids themselves are the op's result.
Dsv3Err dsv3_check_tokens(const void *tokens, int64_t N, int64_t V);
// B, T >= 0; doc and tokens when B × T > 0.
Dsv3Err dsv3_check_document_ids(const void *doc, const void *tokens, int64_t B, int64_t T);
// N >= 0; count always, labels when N > 0.
Dsv3Err dsv3_check_labels_count(const void *count, const void *labels, int64_t N);

// ---- attention, rotary embedding and MLA's key/value assembly (checks_attention.c) ----

// The pointers, sizes >= 1, a finite scale > 0, and Tq = Tk without q_pos; not the positions.
Dsv3Err dsv3_check_attention_forward(const void *out, const void *lse, const void *q, const void *k,
                                     const void *v, const void *q_pos, int64_t B, int64_t Tq,
                                     int64_t Tk, int64_t H, int64_t Dqk, int64_t Dv, float scale);
Dsv3Err dsv3_check_attention_backward(const void *dq, const void *dk, const void *dv,
                                      const void *dout, const void *q, const void *k, const void *v,
                                      const void *out, const void *lse, const void *q_pos,
                                      int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dqk,
                                      int64_t Dv, float scale);
Dsv3Err dsv3_check_attention_merge(const void *out, const void *lse, const void *part_out,
                                   const void *part_lse, int64_t B, int64_t T, int64_t H,
                                   int64_t Dv);

Dsv3Err dsv3_check_rope_tables(const void *cos_table, const void *sin_table, int64_t T, int64_t R,
                               double theta, double factor, double beta_fast, double beta_slow,
                               int64_t original_seq_len);
// x is the first rotated vector (forward) or its gradient (backward); vectors must not overlap.
Dsv3Err dsv3_check_rope_apply(const void *x, const void *cos_table, const void *sin_table,
                              int64_t B, int64_t T, int64_t H, int64_t R, int64_t row_stride,
                              int64_t head_stride);

// MLA's key/value assembly, both directions: N >= 0, H >= 1, nope, R, Dv >= 0, the rotary
// key's stride >= R; when N > 0 the four tensors (a, b the head-wise outputs or gradients, kvb
// wkv_b's output or its gradient, kpe the rotary key or its gradient; op names the direction).
Dsv3Err dsv3_check_mla_kv(const char *op, const void *a, const void *b, const void *kvb,
                          const void *kpe, int64_t kpe_stride, int64_t N, int64_t H, int64_t nope,
                          int64_t R, int64_t Dv);

// ---- MoE: router, load balancing, permutation and routed experts (checks_moe.c) ----
//
// Legend: N tokens, E experts, K experts per token, M = N × K routed rows, D model width, F
// expert hidden width.

// Experts whose biased scores make up one group's score (torchtitan: the top 2 of the group);
// a group must hold at least this many experts.
enum { DSV3_ROUTER_GROUP_TOP = 2 };

// args and N; the pointers only when N > 0 (counts always).
Dsv3Err dsv3_check_router_forward(const void *scores, const void *topk_idx, const void *weights,
                                  const void *counts, const void *logits, int64_t N,
                                  const Dsv3RouterArgs *args);
// args and N; the pointers when N > 0; not the expert indices.
Dsv3Err dsv3_check_router_backward(const void *dlogits, const void *dweights, const void *scores,
                                   const void *topk_idx, int64_t N, const Dsv3RouterArgs *args);

// n >= 0; the pointers when n > 0.
Dsv3Err dsv3_check_counts_accumulate(const void *total, const void *counts, int64_t n);
// E >= 1, the pointers and a finite coeff.
Dsv3Err dsv3_check_expert_bias_update(const void *bias, const void *counts, int64_t E,
                                      double coeff);

// Sizes of the plan (N × K fits int32 row ids), offsets always, the other pointers when
// N × K > 0; not the expert indices.
Dsv3Err dsv3_check_moe_plan(const void *order, const void *offsets, const void *topk_idx, int64_t N,
                            int64_t K, int64_t E);
// *N = M / K after the sizes (M a multiple of K); the pointers when M > 0; not order's entries.
Dsv3Err dsv3_check_moe_gather(int64_t *N, const void *xs, const void *x, const void *order,
                              int64_t M, int64_t K, int64_t D);
Dsv3Err dsv3_check_moe_gather_backward(int64_t *N, const void *dx, const void *dxs,
                                       const void *order, int64_t M, int64_t K, int64_t D);
// Sizes; the pointers when N > 0; not order's entries.
Dsv3Err dsv3_check_moe_combine_forward(const void *out, const void *ys, const void *weights,
                                       const void *order, int64_t N, int64_t K, int64_t D);
Dsv3Err dsv3_check_moe_combine_backward(const void *dys, const void *dweights, const void *dout,
                                        const void *ys, const void *weights, const void *order,
                                        int64_t N, int64_t K, int64_t D);

// The routed experts, in three steps (a CUDA op copies the offsets to the host between the
// first two): E, D, F >= 1 and offsets not NULL; then offsets (E + 1, HOST memory) start at 0
// and never decrease; then, when the M = offsets[E] rows are not 0, the tensors.
Dsv3Err dsv3_check_experts_sizes(const void *offsets, int64_t E, int64_t D, int64_t F);
Dsv3Err dsv3_check_experts_offsets(const int64_t *offsets, int64_t E);
Dsv3Err dsv3_check_experts_forward(const void *ys, const void *h1, const void *h3, const void *xs,
                                   const void *w1, const void *w2, const void *w3, int64_t M);
Dsv3Err dsv3_check_experts_backward(const void *dxs, const void *dw1, const void *dw2,
                                    const void *dw3, const void *dys, const void *xs,
                                    const void *h1, const void *h3, const void *w1, const void *w2,
                                    const void *w3, int64_t M);

#ifdef __cplusplus
}
#endif

#endif
