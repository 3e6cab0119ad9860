// checks: the argument checks that the fast (<op>.c) and the reference (<op>_reference.c) CPU
// versions of an op share, private to kernels/cpu/.
//
// Each check returns DSV3_ERR_USAGE with the message a caller of kernels.h sees, and computes
// nothing: the reference versions stay separate implementations of the math, so that testing
// one version against the other means something. Checks that only a fast version needs (the
// 32-bit sizes of BLAS) stay in its file. Shapes and legends are those of kernels.h.
#ifndef DSV3_KERNELS_CPU_CHECKS_H
#define DSV3_KERNELS_CPU_CHECKS_H

#include <stdint.h>

#include "common/core/error.h"
#include "kernels/kernels.h"

// ---- dense (checks_dense.c) ----

// torch.optim.AdamW's own argument checks, plus step >= 1 (the bias corrections divide by
// 1 − β^step); the pointers only when n > 0.
Dsv3Err dsv3_cpu_check_adamw(const float *param, const float *grad, const float *m, const float *v,
                             int64_t n, const Dsv3AdamWArgs *args);

// Sizes, pointers and every label, before any work, so that a bad label never leaves a
// half-accumulated dweight behind.
Dsv3Err dsv3_cpu_check_cross_entropy(const double *loss_sum, const float *dh, const float *dweight,
                                     const float *h, const float *weight, const int32_t *labels,
                                     int64_t N, int64_t D, int64_t V, int64_t chunk);
// The same for cross_entropy_logits.
Dsv3Err dsv3_cpu_check_cross_entropy_logits(const double *loss_sum, const float *logits,
                                            const int32_t *labels, int64_t N, int64_t V);

// Sizes, the slice [vocab_start, vocab_start + V) of the table, the two buffers a and b (named
// in the messages) and every token id (>= 0; ids outside the slice are allowed).
Dsv3Err dsv3_cpu_check_embedding(const void *a, const char *a_name, const int32_t *tokens,
                                 const void *b, const char *b_name, int64_t N, int64_t D, int64_t V,
                                 int64_t vocab_start);

// The vocabulary-parallel cross-entropy: sizes, the slice [vocab_start, vocab_start + V), the
// pointers when n > 0 (those of the gradients when dh is wanted) and every label
// (DSV3_IGNORE_INDEX or a token id >= 0), before any work.
Dsv3Err dsv3_cpu_check_vocab_logits(const float *logits, const float *row_max, const float *h,
                                    const float *weight, int64_t n, int64_t D, int64_t V);
Dsv3Err dsv3_cpu_check_vocab_logits_sums(const double *sums, const float *logits,
                                         const float *row_max, const int32_t *labels, int64_t n,
                                         int64_t V, int64_t vocab_start);
Dsv3Err dsv3_cpu_check_vocab_logits_backward(const double *loss_sum, const float *dh,
                                             const float *dweight, const float *logits,
                                             const float *row_max, const double *sums,
                                             const float *h, const float *weight,
                                             const int32_t *labels, int64_t n, int64_t D, int64_t V,
                                             int64_t vocab_start);

Dsv3Err dsv3_cpu_check_linear_forward(const float *out, const float *x, const float *weight,
                                      int64_t N, int64_t In, int64_t Out);
Dsv3Err dsv3_cpu_check_linear_backward(const float *dx, const float *dweight, const float *dout,
                                       const float *x, const float *weight, int64_t N, int64_t In,
                                       int64_t Out);

// n >= 0; out always, x when n > 0.
Dsv3Err dsv3_cpu_check_sum_squares(const double *out, const float *x, int64_t n);
// n >= 0; x when n > 0.
Dsv3Err dsv3_cpu_check_scale(const float *x, int64_t n);

// ---- element-wise, copies and conversion (checks_elementwise.c) ----

// n >= 0; the pointers when n > 0.
Dsv3Err dsv3_cpu_check_add(const float *out, const float *a, const float *b, int64_t n);
// rows, cols >= 0, both strides >= cols; the pointers when rows × cols > 0.
Dsv3Err dsv3_cpu_check_copy_columns(const float *dst, int64_t dst_stride, const float *src,
                                    int64_t src_stride, int64_t rows, int64_t cols);
// The pair of dtypes is one the CPU converts (f32 → f32, f32 → bf16, bf16 → f32); n >= 0; when
// n > 0 the pointers, and dst and src do not overlap.
Dsv3Err dsv3_cpu_check_convert(const void *dst, Dsv3TensorDtype dst_dtype, const void *src,
                               Dsv3TensorDtype src_dtype, int64_t n);

// ---- token bookkeeping (checks_tokens.c) ----

// N >= 0, 0 < V <= 2^31 (int32 ids); tokens when N > 0. The ids themselves are checked by the
// op (its result).
Dsv3Err dsv3_cpu_check_tokens(const int32_t *tokens, int64_t N, int64_t V);
// B, T >= 0; doc and tokens when B × T > 0.
Dsv3Err dsv3_cpu_check_document_ids(const int32_t *doc, const int32_t *tokens, int64_t B,
                                    int64_t T);
// N >= 0; count always, labels when N > 0.
Dsv3Err dsv3_cpu_check_labels_count(const int64_t *count, const int32_t *labels, int64_t N);

// ---- attention and rotary embedding (checks_attention.c) ----

Dsv3Err dsv3_cpu_check_attention_forward(const float *out, const float *lse, const float *q,
                                         const float *k, const float *v, const int32_t *q_pos,
                                         int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dqk,
                                         int64_t Dv, float scale);
Dsv3Err dsv3_cpu_check_attention_backward(const float *dq, const float *dk, const float *dv,
                                          const float *dout, const float *q, const float *k,
                                          const float *v, const float *out, const float *lse,
                                          const int32_t *q_pos, int64_t B, int64_t Tq, int64_t Tk,
                                          int64_t H, int64_t Dqk, int64_t Dv, float scale);

Dsv3Err dsv3_cpu_check_attention_merge(const float *out, const float *lse, const float *part_out,
                                       const float *part_lse, int64_t B, int64_t T, int64_t H,
                                       int64_t Dv);
Dsv3Err dsv3_cpu_check_rope_tables(const float *cos_table, const float *sin_table, int64_t T,
                                   int64_t R, double theta, double factor, double beta_fast,
                                   double beta_slow, int64_t original_seq_len);
// x is the first rotated vector (forward) or its gradient (backward); vectors must not overlap.
Dsv3Err dsv3_cpu_check_rope_apply(const float *x, const float *cos_table, const float *sin_table,
                                  int64_t B, int64_t T, int64_t H, int64_t R, int64_t row_stride,
                                  int64_t head_stride);

// MLA's key/value assembly, both directions: N >= 0, H >= 1, nope, R, Dv >= 0, the rotary
// key's stride >= R; when N > 0 the four tensors (a, b the head-wise outputs or gradients, kvb
// wkv_b's output or its gradient, kpe the rotary key or its gradient; op names the direction).
Dsv3Err dsv3_cpu_check_mla_kv(const char *op, const float *a, const float *b, const float *kvb,
                              const float *kpe, int64_t kpe_stride, int64_t N, int64_t H,
                              int64_t nope, int64_t R, int64_t Dv);

// ---- MoE: router, load balancing, permutation and routed experts (checks_moe.c) ----

// Experts whose biased scores make up one group's score (torchtitan: the top 2 of the group);
// a group must hold at least this many experts.
enum { DSV3_ROUTER_GROUP_TOP = 2 };

// args and N; the pointers only when N > 0 (counts always).
Dsv3Err dsv3_cpu_check_router_forward(const float *scores, const int32_t *topk_idx,
                                      const float *weights, const int64_t *counts,
                                      const float *logits, int64_t N, const Dsv3RouterArgs *args);
// args and N; when N > 0 the pointers and every expert index.
Dsv3Err dsv3_cpu_check_router_backward(const float *dlogits, const float *dweights,
                                       const float *scores, const int32_t *topk_idx, int64_t N,
                                       const Dsv3RouterArgs *args);

// Sizes of the plan, offsets always, the other pointers when N × K > 0. The expert indices
// are checked by each version (the fast one in parallel).
Dsv3Err dsv3_cpu_check_moe_plan(const int32_t *order, const int64_t *offsets,
                                const int32_t *topk_idx, int64_t N, int64_t K, int64_t E);
// *N = M / K after the sizes; when M > 0, the pointers and every entry of order.
Dsv3Err dsv3_cpu_check_moe_gather(int64_t *N, const float *xs, const float *x, const int32_t *order,
                                  int64_t M, int64_t K, int64_t D);
// *N = M / K after the sizes; when M > 0, the pointers (order: see dsv3_cpu_moe_rows_of).
Dsv3Err dsv3_cpu_check_moe_gather_backward(int64_t *N, const float *dx, const float *dxs,
                                           const int32_t *order, int64_t M, int64_t K, int64_t D);
Dsv3Err dsv3_cpu_check_moe_combine_forward(const float *out, const float *ys, const float *weights,
                                           const int32_t *order, int64_t N, int64_t K, int64_t D);
Dsv3Err dsv3_cpu_check_moe_combine_backward(const float *dys, const float *dweights,
                                            const float *dout, const float *ys,
                                            const float *weights, const int32_t *order, int64_t N,
                                            int64_t K, int64_t D);
// Sizes and offsets (E + 1, starting at 0, non-decreasing); when offsets[E] > 0, the tensors.
Dsv3Err dsv3_cpu_check_experts_forward(const float *ys, const float *h1, const float *h3,
                                       const float *xs, const float *w1, const float *w2,
                                       const float *w3, const int64_t *offsets, int64_t E,
                                       int64_t D, int64_t F);
Dsv3Err dsv3_cpu_check_experts_backward(const float *dxs, const float *dw1, const float *dw2,
                                        const float *dw3, const float *dys, const float *xs,
                                        const float *h1, const float *h3, const float *w1,
                                        const float *w2, const float *w3, const int64_t *offsets,
                                        int64_t E, int64_t D, int64_t F);

// n >= 0; the pointers when n > 0.
Dsv3Err dsv3_cpu_check_counts_accumulate(const int64_t *total, const int64_t *counts, int64_t n);
// E >= 1, the pointers and a finite coeff.
Dsv3Err dsv3_cpu_check_expert_bias_update(const float *bias, const int64_t *counts, int64_t E,
                                          double coeff);

// Every entry of order (M) is an assignment in [0, M).
Dsv3Err dsv3_cpu_check_moe_order(const int32_t *order, int64_t M);
// row_of (M, the caller's scratch): the row of each assignment; fails unless order is a
// permutation of [0, M). The check of order and the table that the gather backward and the
// combine read; one thread.
Dsv3Err dsv3_cpu_moe_rows_of(int32_t *row_of, const int32_t *order, int64_t M);

#endif
