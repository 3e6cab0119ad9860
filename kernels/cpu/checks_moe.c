// checks_moe: the CPU's checks of the values of the router's expert indices, of the MoE
// permutation's order and of the routed experts' offsets, after the shared checks
// (kernels/checks.h).
//
// Legend: N tokens, E experts, K experts per token, D model width, F expert hidden width,
// M = N × K routed rows.
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/checks.h"

Dsv3Err dsv3_cpu_check_router_backward(const float *dlogits, const float *dweights,
                                       const float *scores, const int32_t *topk_idx, int64_t N,
                                       const Dsv3RouterArgs *args) {
    DSV3_CALL(dsv3_check_router_backward(dlogits, dweights, scores, topk_idx, N, args));
    const int64_t E = args->num_experts, K = args->top_k;
    for (int64_t i = 0; i < N * K; i++)
        DSV3_CHECK(topk_idx[i] >= 0 && topk_idx[i] < E, DSV3_ERR_USAGE,
                   "router: topk_idx[%" PRId64 "][%" PRId64 "] = %" PRId32
                   " is not an expert in [0, %" PRId64 ")",
                   i / K, i % K, topk_idx[i], E);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_moe_order(const int32_t *order, int64_t M) {
    for (int64_t j = 0; j < M; j++)
        DSV3_CHECK(order[j] >= 0 && order[j] < M, DSV3_ERR_USAGE,
                   "moe_permute: order[%" PRId64 "] = %" PRId32
                   " is not an assignment in [0, %" PRId64 ")",
                   j, order[j], M);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_moe_rows_of(int32_t *row_of, const int32_t *order, int64_t M) {
    DSV3_CALL(dsv3_cpu_check_moe_order(order, M));
    memset(row_of, 0xff, (size_t)M * sizeof(int32_t)); // all −1
    for (int64_t j = 0; j < M; j++) {
        DSV3_CHECK(row_of[order[j]] < 0, DSV3_ERR_USAGE,
                   "moe_permute: order[%" PRId32 "] = order[%" PRId64 "] = %" PRId32
                   ": order must be a permutation of [0, M)",
                   row_of[order[j]], j, order[j]);
        row_of[order[j]] = (int32_t)j;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_moe_gather(int64_t *N, const float *xs, const float *x, const int32_t *order,
                                  int64_t M, int64_t K, int64_t D) {
    DSV3_CALL(dsv3_check_moe_gather(N, xs, x, order, M, K, D));
    return dsv3_cpu_check_moe_order(order, M);
}

Dsv3Err dsv3_cpu_check_experts_forward(const float *ys, const float *h1, const float *h3,
                                       const float *xs, const float *w1, const float *w2,
                                       const float *w3, const int64_t *offsets, int64_t E,
                                       int64_t D, int64_t F) {
    DSV3_CALL(dsv3_check_experts_sizes(offsets, E, D, F));
    DSV3_CALL(dsv3_check_experts_offsets(offsets, E));
    return dsv3_check_experts_forward(ys, h1, h3, xs, w1, w2, w3, offsets[E]);
}

Dsv3Err dsv3_cpu_check_experts_backward(const float *dxs, const float *dw1, const float *dw2,
                                        const float *dw3, const float *dys, const float *xs,
                                        const float *h1, const float *h3, const float *w1,
                                        const float *w2, const float *w3, const int64_t *offsets,
                                        int64_t E, int64_t D, int64_t F) {
    DSV3_CALL(dsv3_check_experts_sizes(offsets, E, D, F));
    DSV3_CALL(dsv3_check_experts_offsets(offsets, E));
    return dsv3_check_experts_backward(dxs, dw1, dw2, dw3, dys, xs, h1, h3, w1, w2, w3, offsets[E]);
}
