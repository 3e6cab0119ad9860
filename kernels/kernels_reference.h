// kernels_reference: the plain version of every op in kernels.h.
//
// Same signatures and semantics as kernels.h, with `_reference` appended to each name. Written
// for clarity, single-threaded, straight loops, double accumulators where a sum is long; the
// fast ops are tested against these, and these against PyTorch. Not for production use.
#ifndef DSV3_KERNELS_KERNELS_REFERENCE_H
#define DSV3_KERNELS_KERNELS_REFERENCE_H

#include "kernels/kernels.h"

// ---- embedding ----

Dsv3Err dsv3_embedding_forward_reference(float *out, const int32_t *tokens, const float *weight,
                                         int64_t N, int64_t D, int64_t V);
Dsv3Err dsv3_embedding_backward_reference(float *dweight, const float *dout, const int32_t *tokens,
                                          int64_t N, int64_t D, int64_t V);

// ---- RMSNorm (torch.nn.RMSNorm) ----

Dsv3Err dsv3_rmsnorm_forward_reference(float *out, float *rstd, const float *x, const float *weight,
                                       int64_t N, int64_t D, float eps);
Dsv3Err dsv3_rmsnorm_backward_reference(float *dx, float *dweight, const float *dout,
                                        const float *x, const float *weight, const float *rstd,
                                        int64_t N, int64_t D);

// ---- linear (no bias; torch.nn.Linear's weight layout) ----

Dsv3Err dsv3_linear_forward_reference(float *out, const float *x, const float *weight, int64_t N,
                                      int64_t In, int64_t Out);
Dsv3Err dsv3_linear_backward_reference(float *dx, float *dweight, const float *dout, const float *x,
                                       const float *weight, int64_t N, int64_t In, int64_t Out,
                                       int accumulate_dx);

// ---- rotary embedding on interleaved pairs, with YaRN ----

Dsv3Err dsv3_rope_tables_reference(float *cos, float *sin, int64_t T, int64_t R, double theta,
                                   double factor, double beta_fast, double beta_slow,
                                   int64_t original_seq_len);
Dsv3Err dsv3_rope_forward_reference(float *x, const float *cos, const float *sin, int64_t B,
                                    int64_t T, int64_t H, int64_t R, int64_t row_stride,
                                    int64_t head_stride);
Dsv3Err dsv3_rope_backward_reference(float *dx, const float *cos, const float *sin, int64_t B,
                                     int64_t T, int64_t H, int64_t R, int64_t row_stride,
                                     int64_t head_stride);

// ---- attention (scaled dot product, causal or block-causal) ----

Dsv3Err dsv3_attention_forward_reference(float *out, float *lse, const float *q, const float *k,
                                         const float *v, const int32_t *doc, int64_t B, int64_t T,
                                         int64_t H, int64_t Dqk, int64_t Dv, float scale);
Dsv3Err dsv3_attention_backward_reference(float *dq, float *dk, float *dv, const float *dout,
                                          const float *q, const float *k, const float *v,
                                          const float *out, const float *lse, const int32_t *doc,
                                          int64_t B, int64_t T, int64_t H, int64_t Dqk, int64_t Dv,
                                          float scale);

// ---- SwiGLU gate: h = silu(a) · b, with a = w1 x and b = w3 x ----

Dsv3Err dsv3_swiglu_forward_reference(float *h, const float *a, const float *b, int64_t N,
                                      int64_t F);
Dsv3Err dsv3_swiglu_backward_reference(float *da, float *db, const float *dh, const float *a,
                                       const float *b, int64_t N, int64_t F);

// ---- MoE router (torchtitan's TokenChoiceTopKRouter) ----

Dsv3Err dsv3_router_forward_reference(float *scores, int32_t *topk_idx, float *weights,
                                      int64_t *counts, const float *logits,
                                      const float *expert_bias, int64_t N,
                                      const Dsv3RouterArgs *args);
Dsv3Err dsv3_router_backward_reference(float *dlogits, const float *dweights, const float *scores,
                                       const int32_t *topk_idx, int64_t N,
                                       const Dsv3RouterArgs *args);

// ---- token permutation to experts and back ----

Dsv3Err dsv3_moe_plan_reference(int32_t *order, int64_t *offsets, const int32_t *topk_idx,
                                int64_t N, int64_t K, int64_t E);
Dsv3Err dsv3_moe_gather_reference(float *xs, const float *x, const int32_t *order, int64_t M,
                                  int64_t K, int64_t D);
Dsv3Err dsv3_moe_gather_backward_reference(float *dx, const float *dxs, const int32_t *order,
                                           int64_t M, int64_t K, int64_t D);
Dsv3Err dsv3_moe_combine_forward_reference(float *out, const float *ys, const float *weights,
                                           const int32_t *order, int64_t N, int64_t K, int64_t D);
Dsv3Err dsv3_moe_combine_backward_reference(float *dys, float *dweights, const float *dout,
                                            const float *ys, const float *weights,
                                            const int32_t *order, int64_t N, int64_t K, int64_t D);

// ---- routed experts: grouped SwiGLU FFNs ----

Dsv3Err dsv3_experts_forward_reference(float *ys, float *h1, float *h3, const float *xs,
                                       const float *w1, const float *w2, const float *w3,
                                       const int64_t *offsets, int64_t E, int64_t D, int64_t F);
Dsv3Err dsv3_experts_backward_reference(float *dxs, float *dw1, float *dw2, float *dw3,
                                        const float *dys, const float *xs, const float *h1,
                                        const float *h3, const float *w1, const float *w2,
                                        const float *w3, const int64_t *offsets, int64_t E,
                                        int64_t D, int64_t F);

// ---- output head fused with cross-entropy ----

Dsv3Err dsv3_cross_entropy_reference(double *loss_sum, float *dh, float *dweight, const float *h,
                                     const float *weight, const int32_t *labels, int64_t N,
                                     int64_t D, int64_t V, float grad_scale, int64_t chunk);

// ---- optimizer and clipping ----

Dsv3Err dsv3_adamw_step_reference(float *param, const float *grad, float *m, float *v, int64_t n,
                                  const Dsv3AdamWArgs *args);

double dsv3_sum_squares_reference(const float *x, int64_t n);

void dsv3_scale_reference(float *x, int64_t n, float factor);

#endif
