// moe_permute_reference.c: MoE token permutation to experts and back, written for clarity.
//
// An assignment a = n·K + k is token n's k-th chosen expert. The plan lists the assignments
// expert by expert, each expert's in increasing a (torch.argsort(stable=True) of the flattened
// expert indices); routed row j holds assignment order[j], a copy of token order[j] / K.
// Combine adds each token's K expert outputs, weighted, back onto the token; it finds the row
// of each assignment in a table kept in the context's workspace.
//
// Legend: N tokens, K experts per token, E experts, D model width, M = N × K routed rows.
#include <inttypes.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Workspace of the combine (both directions): row_of (M = N × K) int32.
size_t dsv3_cpu_reference_moe_combine_workspace(const Dsv3OpShape *shape) {
    Dsv3CpuLayout layout = {0};
    dsv3_cpu_layout_add(&layout, shape->N * shape->K, sizeof(int32_t));
    return layout.bytes;
}

// row_of (M) from the context's workspace, filled from order; checked before any work.
static Dsv3Err rows_of(int32_t **row_of, const Dsv3KernelContext *ctx, const char *op,
                       const int32_t *order, int64_t N, int64_t K) {
    const Dsv3OpShape shape = {.N = N, .K = K};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, op, dsv3_cpu_reference_moe_combine_workspace(&shape)));
    *row_of = ctx->workspace;
    if (N * K > 0) DSV3_CALL(dsv3_cpu_moe_rows_of(*row_of, order, N * K));
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_moe_plan(const Dsv3KernelContext *ctx, int32_t *order, int64_t *offsets,
                                    const int32_t *topk_idx, int64_t N, int64_t K, int64_t E) {
    (void)ctx;
    DSV3_CALL(dsv3_check_moe_plan(order, offsets, topk_idx, N, K, E));
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

Dsv3Err dsv3_cpu_reference_moe_gather(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                      void *xs_, const void *x_, const int32_t *order, int64_t M,
                                      int64_t K, int64_t D) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("moe_gather", dtype));
    float *xs = xs_;     // (M, D)
    const float *x = x_; // (N, D)
    int64_t N;
    DSV3_CALL(dsv3_cpu_check_moe_gather(&N, xs, x, order, M, K, D));
    if (M == 0) return DSV3_OK;
    for (int64_t j = 0; j < M; j++)
        for (int64_t d = 0; d < D; d++)
            xs[j * D + d] = x[(order[j] / K) * D + d];
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_moe_gather_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                               void *dx_, const void *dxs_, const int32_t *order,
                                               int64_t M, int64_t K, int64_t D) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("moe_gather_backward", dtype));
    float *dx = dx_;         // (N, D)
    const float *dxs = dxs_; // (M, D)
    int64_t N;
    DSV3_CALL(dsv3_check_moe_gather_backward(&N, dx, dxs, order, M, K, D));
    if (M == 0) return DSV3_OK;
    DSV3_CALL(dsv3_cpu_check_moe_order(order, M));
    for (int64_t j = 0; j < M; j++)
        for (int64_t d = 0; d < D; d++)
            dx[(order[j] / K) * D + d] += dxs[j * D + d];
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_moe_combine_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                               void *out_, const void *ys_, const float *weights,
                                               const int32_t *order, int64_t N, int64_t K,
                                               int64_t D) {
    DSV3_CALL(dsv3_cpu_check_f32("moe_combine_forward", dtype));
    float *out = out_;     // (N, D)
    const float *ys = ys_; // (M, D)
    DSV3_CALL(dsv3_check_moe_combine_forward(out, ys, weights, order, N, K, D));
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(rows_of(&row_of, ctx, "moe_combine_forward", order, N, K));
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            double sum = 0;
            for (int64_t k = 0; k < K; k++)
                sum += (double)weights[n * K + k] * ys[row_of[n * K + k] * D + d];
            out[n * D + d] += (float)sum;
        }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_moe_combine_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                                void *dys_, float *dweights, const void *dout_,
                                                const void *ys_, const float *weights,
                                                const int32_t *order, int64_t N, int64_t K,
                                                int64_t D) {
    DSV3_CALL(dsv3_cpu_check_f32("moe_combine_backward", dtype));
    float *dys = dys_;                    // (M, D)
    const float *dout = dout_, *ys = ys_; // (N, D), (M, D)
    DSV3_CALL(dsv3_check_moe_combine_backward(dys, dweights, dout, ys, weights, order, N, K, D));
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(rows_of(&row_of, ctx, "moe_combine_backward", order, N, K));
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
    return DSV3_OK;
}
