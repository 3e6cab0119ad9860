// checks: the argument checks that the fast (<op>.c) and the reference (<op>_reference.c) CPU
// versions of an op share and that read tensor values, private to kernels/cpu/.
//
// Each check first calls the backend-neutral check of sizes, scalars and pointers
// (kernels/checks.h, which the CPU ops call directly where nothing more is needed), then reads
// what the CPU can read before any work and a CUDA kernel records as a data fault instead:
// labels, token ids, expert indices, order entries, query positions. (The experts' checks only
// chain the shared ones, the offsets being in host memory here.) It returns DSV3_ERR_USAGE with the
// message a caller of kernels.h sees, and computes nothing: the reference versions stay separate
// implementations of the math, so that testing one version against the other means something.
// Checks that only a fast version needs (the 32-bit sizes of BLAS) stay in its file. Shapes and
// legends are those of kernels.h.
#ifndef DSV3_KERNELS_CPU_CHECKS_H
#define DSV3_KERNELS_CPU_CHECKS_H

#include <stdint.h>

#include "common/core/error.h"
#include "kernels/checks.h"
#include "kernels/kernels.h"

// ---- dense (checks_dense.c) ----

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

// The vocabulary-parallel cross-entropy: the shared checks, then every label
// (DSV3_IGNORE_INDEX or a token id >= 0), before any work.
Dsv3Err dsv3_cpu_check_vocab_logits_sums(const double *sums, const float *logits,
                                         const float *row_max, const int32_t *labels, int64_t n,
                                         int64_t V, int64_t vocab_start);
Dsv3Err dsv3_cpu_check_vocab_logits_backward(const double *loss_sum, const float *dh,
                                             const float *dweight, const float *logits,
                                             const float *row_max, const double *sums,
                                             const float *h, const float *weight,
                                             const int32_t *labels, int64_t n, int64_t D, int64_t V,
                                             int64_t vocab_start);

// ---- conversion (checks_elementwise.c) ----

// The pair of dtypes is one the CPU converts (f32 → f32, f32 → bf16, bf16 → f32), then the
// shared checks (n, pointers, no overlap).
Dsv3Err dsv3_cpu_check_convert(const void *dst, Dsv3TensorDtype dst_dtype, const void *src,
                               Dsv3TensorDtype src_dtype, int64_t n);

// ---- attention (checks_attention.c) ----

// The shared checks, then every query position in [-1, Tk).
Dsv3Err dsv3_cpu_check_attention_forward(const float *out, const float *lse, const float *q,
                                         const float *k, const float *v, const int32_t *q_pos,
                                         int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dqk,
                                         int64_t Dv, float scale);
Dsv3Err dsv3_cpu_check_attention_backward(const float *dq, const float *dk, const float *dv,
                                          const float *dout, const float *q, const float *k,
                                          const float *v, const float *out, const float *lse,
                                          const int32_t *q_pos, int64_t B, int64_t Tq, int64_t Tk,
                                          int64_t H, int64_t Dqk, int64_t Dv, float scale);

// ---- MoE: router, permutation and routed experts (checks_moe.c) ----

// The shared checks; when N > 0 every expert index.
Dsv3Err dsv3_cpu_check_router_backward(const float *dlogits, const float *dweights,
                                       const float *scores, const int32_t *topk_idx, int64_t N,
                                       const Dsv3RouterArgs *args);

// *N = M / K after the sizes; when M > 0, the pointers and every entry of order.
Dsv3Err dsv3_cpu_check_moe_gather(int64_t *N, const float *xs, const float *x, const int32_t *order,
                                  int64_t M, int64_t K, int64_t D);
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

// Every entry of order (M) is an assignment in [0, M).
Dsv3Err dsv3_cpu_check_moe_order(const int32_t *order, int64_t M);
// row_of (M, the caller's scratch): the row of each assignment; fails unless order is a
// permutation of [0, M). The check of order and the table that the gather backward and the
// combine read; one thread.
Dsv3Err dsv3_cpu_moe_rows_of(int32_t *row_of, const int32_t *order, int64_t M);

#endif
