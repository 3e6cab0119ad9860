// moe_permute_reference.c: MoE token permutation to experts and back, written for clarity.
//
// An assignment a = n·K + k is token n's k-th chosen expert. The plan lists the assignments
// expert by expert, each expert's in increasing a (torch.argsort(stable=True) of the flattened
// expert indices); routed row j holds assignment order[j], a copy of token order[j] / K.
// Combine adds each token's K expert outputs, weighted, back onto the token.
//
// Legend: N tokens, K experts per token, E experts, D model width, M = N × K routed rows.
#include <inttypes.h>
#include <stdint.h>

#include "common/core/alloc.h"
#include "kernels/cpu/checks.h"
#include "kernels/kernels_reference.h"

Dsv3Err dsv3_moe_plan_reference(int32_t *order, int64_t *offsets, const int32_t *topk_idx,
                                int64_t N, int64_t K, int64_t E) {
    DSV3_CALL(dsv3_cpu_check_moe_plan(order, offsets, topk_idx, N, K, E));
    const int64_t M = N * K;
    for (int64_t a = 0; a < M; a++)
        DSV3_CHECK(topk_idx[a] >= 0 && topk_idx[a] < E, DSV3_ERR_USAGE,
                   "moe_plan: topk_idx[%" PRId64 "][%" PRId64 "] = %" PRId32
                   " is not an expert in [0, %" PRId64 ")",
                   a / K, a % K, topk_idx[a], E);
    int64_t j = 0;
    for (int64_t e = 0; e < E; e++) {
        offsets[e] = j;
        for (int64_t a = 0; a < M; a++)
            if (topk_idx[a] == e) order[j++] = (int32_t)a;
    }
    offsets[E] = j;
    return DSV3_OK;
}

Dsv3Err dsv3_moe_gather_reference(float *xs, const float *x, const int32_t *order, int64_t M,
                                  int64_t K, int64_t D) {
    int64_t N;
    DSV3_CALL(dsv3_cpu_check_moe_gather(&N, xs, x, order, M, K, D));
    if (M == 0) return DSV3_OK;
    for (int64_t j = 0; j < M; j++)
        for (int64_t d = 0; d < D; d++)
            xs[j * D + d] = x[(order[j] / K) * D + d];
    return DSV3_OK;
}

Dsv3Err dsv3_moe_gather_backward_reference(float *dx, const float *dxs, const int32_t *order,
                                           int64_t M, int64_t K, int64_t D) {
    int64_t N;
    DSV3_CALL(dsv3_cpu_check_moe_gather_backward(&N, dx, dxs, order, M, K, D));
    if (M == 0) return DSV3_OK;
    DSV3_CALL(dsv3_cpu_check_moe_order(order, M));
    for (int64_t j = 0; j < M; j++)
        for (int64_t d = 0; d < D; d++)
            dx[(order[j] / K) * D + d] += dxs[j * D + d];
    return DSV3_OK;
}

Dsv3Err dsv3_moe_combine_forward_reference(float *out, const float *ys, const float *weights,
                                           const int32_t *order, int64_t N, int64_t K, int64_t D) {
    DSV3_CALL(dsv3_cpu_check_moe_combine_forward(out, ys, weights, order, N, K, D));
    const int64_t M = N * K;
    if (M == 0) return DSV3_OK;
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(dsv3_cpu_moe_rows_of(&row_of, order, M));
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            double sum = 0;
            for (int64_t k = 0; k < K; k++)
                sum += (double)weights[n * K + k] * ys[row_of[n * K + k] * D + d];
            out[n * D + d] += (float)sum;
        }
    dsv3_free(row_of);
    return DSV3_OK;
}

Dsv3Err dsv3_moe_combine_backward_reference(float *dys, float *dweights, const float *dout,
                                            const float *ys, const float *weights,
                                            const int32_t *order, int64_t N, int64_t K, int64_t D) {
    DSV3_CALL(
        dsv3_cpu_check_moe_combine_backward(dys, dweights, dout, ys, weights, order, N, K, D));
    const int64_t M = N * K;
    if (M == 0) return DSV3_OK;
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(dsv3_cpu_moe_rows_of(&row_of, order, M));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            const int64_t j = row_of[n * K + k];
            double dot = 0;
            for (int64_t d = 0; d < D; d++) {
                dys[j * D + d] = weights[n * K + k] * dout[n * D + d];
                dot += (double)dout[n * D + d] * ys[j * D + d];
            }
            dweights[n * K + k] = (float)dot;
        }
    dsv3_free(row_of);
    return DSV3_OK;
}
