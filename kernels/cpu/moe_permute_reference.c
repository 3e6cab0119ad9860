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
#include "kernels/kernels_reference.h"

static Dsv3Err permute_check_dims(int64_t N, int64_t K, int64_t D) {
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "moe_permute: N = %" PRId64 " tokens, expected N >= 0", N);
    DSV3_CHECK(K >= 1, DSV3_ERR_USAGE, "moe_permute: K = %" PRId64 ", expected K >= 1", K);
    DSV3_CHECK(D >= 1, DSV3_ERR_USAGE, "moe_permute: D = %" PRId64 ", expected D >= 1", D);
    DSV3_CHECK(N <= ((int64_t)INT32_MAX + 1) / K, DSV3_ERR_USAGE,
               "moe_permute: N × K = %" PRId64 " × %" PRId64 " rows exceed int32 row ids", N, K);
    return DSV3_OK;
}

// M rows of K assignments each are N = M / K tokens.
static Dsv3Err permute_tokens_of_rows(int64_t *N, int64_t M, int64_t K, int64_t D) {
    DSV3_CHECK(M >= 0 && K >= 1 && M % K == 0, DSV3_ERR_USAGE,
               "moe_permute: M = %" PRId64 " rows, expected a multiple of K = %" PRId64 " >= 1", M,
               K);
    *N = M / K;
    DSV3_CALL(permute_check_dims(*N, K, D));
    return DSV3_OK;
}

static Dsv3Err permute_check_order(const int32_t *order, int64_t M) {
    for (int64_t j = 0; j < M; j++)
        DSV3_CHECK(order[j] >= 0 && order[j] < M, DSV3_ERR_USAGE,
                   "moe_permute: order[%" PRId64 "] = %" PRId32 " is not an assignment in [0, %" PRId64
                   ")",
                   j, order[j], M);
    return DSV3_OK;
}

// row_of (M): the row of each assignment; fails unless order is a permutation of [0, M).
static Dsv3Err permute_invert(int64_t *row_of, const int32_t *order, int64_t M) {
    DSV3_CALL(permute_check_order(order, M));
    for (int64_t a = 0; a < M; a++) row_of[a] = -1;
    for (int64_t j = 0; j < M; j++) {
        DSV3_CHECK(row_of[order[j]] < 0, DSV3_ERR_USAGE,
                   "moe_permute: order[%" PRId64 "] = order[%" PRId64 "] = %" PRId32
                   ": order must be a permutation of [0, M)",
                   row_of[order[j]], j, order[j]);
        row_of[order[j]] = j;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_moe_plan_reference(int32_t *order, int64_t *offsets, const int32_t *topk_idx,
                                int64_t N, int64_t K, int64_t E) {
    DSV3_CALL(permute_check_dims(N, K, 1));
    DSV3_CHECK(E >= 1, DSV3_ERR_USAGE, "moe_plan: E = %" PRId64 " experts, expected E >= 1", E);
    DSV3_CHECK(offsets != NULL, DSV3_ERR_USAGE, "moe_plan: offsets is NULL");
    const int64_t M = N * K;
    if (M > 0) DSV3_CHECK(order && topk_idx, DSV3_ERR_USAGE, "moe_plan: order or topk_idx is NULL");
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
    DSV3_CALL(permute_tokens_of_rows(&N, M, K, D));
    if (M == 0) return DSV3_OK;
    DSV3_CHECK(xs && x && order, DSV3_ERR_USAGE, "moe_gather: xs, x and order must not be NULL");
    DSV3_CALL(permute_check_order(order, M));
    for (int64_t j = 0; j < M; j++)
        for (int64_t d = 0; d < D; d++) xs[j * D + d] = x[(order[j] / K) * D + d];
    return DSV3_OK;
}

Dsv3Err dsv3_moe_gather_backward_reference(float *dx, const float *dxs, const int32_t *order,
                                           int64_t M, int64_t K, int64_t D) {
    int64_t N;
    DSV3_CALL(permute_tokens_of_rows(&N, M, K, D));
    if (M == 0) return DSV3_OK;
    DSV3_CHECK(dx && dxs && order, DSV3_ERR_USAGE,
               "moe_gather_backward: dx, dxs and order must not be NULL");
    DSV3_CALL(permute_check_order(order, M));
    for (int64_t j = 0; j < M; j++)
        for (int64_t d = 0; d < D; d++) dx[(order[j] / K) * D + d] += dxs[j * D + d];
    return DSV3_OK;
}

Dsv3Err dsv3_moe_combine_forward_reference(float *out, const float *ys, const float *weights,
                                           const int32_t *order, int64_t N, int64_t K,
                                           int64_t D) {
    DSV3_CALL(permute_check_dims(N, K, D));
    const int64_t M = N * K;
    if (M == 0) return DSV3_OK;
    DSV3_CHECK(out && ys && weights && order, DSV3_ERR_USAGE,
               "moe_combine: out, ys, weights and order must not be NULL");
    Dsv3Err err = DSV3_OK;
    int64_t *row_of = NULL; // (M)
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&row_of, (size_t)M * sizeof(int64_t), "combine rows"));
    DSV3_CALL_GOTO(err, done, permute_invert(row_of, order, M));
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            double sum = 0;
            for (int64_t k = 0; k < K; k++)
                sum += (double)weights[n * K + k] * ys[row_of[n * K + k] * D + d];
            out[n * D + d] += (float)sum;
        }
done:
    dsv3_free(row_of);
    return err;
}

Dsv3Err dsv3_moe_combine_backward_reference(float *dys, float *dweights, const float *dout,
                                            const float *ys, const float *weights,
                                            const int32_t *order, int64_t N, int64_t K,
                                            int64_t D) {
    DSV3_CALL(permute_check_dims(N, K, D));
    const int64_t M = N * K;
    if (M == 0) return DSV3_OK;
    DSV3_CHECK(dys && dweights && dout && ys && weights && order, DSV3_ERR_USAGE,
               "moe_combine_backward: dys, dweights, dout, ys, weights and order must not be NULL");
    Dsv3Err err = DSV3_OK;
    int64_t *row_of = NULL; // (M)
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&row_of, (size_t)M * sizeof(int64_t), "combine rows"));
    DSV3_CALL_GOTO(err, done, permute_invert(row_of, order, M));
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
done:
    dsv3_free(row_of);
    return err;
}
