// checks_moe: the shared argument checks of the router, the load balancing, the MoE token
// permutation and the routed experts.
//
// Legend: N tokens, E experts, K experts per token, G expert groups, L groups a token may use,
// D model width, F expert hidden width, M = N × K routed rows.
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/checks.h"

static Dsv3Err router_check_args(const Dsv3RouterArgs *args, int64_t N) {
    DSV3_CHECK(args != NULL, DSV3_ERR_USAGE, "router: args is NULL");
    const int64_t E = args->num_experts, K = args->top_k, G = args->num_groups;
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "router: N = %" PRId64 " tokens, expected N >= 0", N);
    DSV3_CHECK(E > 0 && E <= INT32_MAX, DSV3_ERR_USAGE,
               "router: num_experts = %" PRId64 ", expected 0 < num_experts <= 2^31 - 1", E);
    DSV3_CHECK(K >= 1 && K <= E, DSV3_ERR_USAGE,
               "router: top_k = %" PRId64 ", expected 1 <= top_k <= num_experts = %" PRId64, K, E);
    DSV3_CHECK(G >= 0, DSV3_ERR_USAGE, "router: num_groups = %" PRId64 ", expected >= 0 (0: off)",
               G);
    if (G > 0) {
        const int64_t L = args->num_limited_groups;
        DSV3_CHECK(E % G == 0 && E / G >= DSV3_ROUTER_GROUP_TOP, DSV3_ERR_USAGE,
                   "router: num_groups = %" PRId64 " must divide num_experts = %" PRId64
                   " into groups of at least %d experts",
                   G, E, DSV3_ROUTER_GROUP_TOP);
        DSV3_CHECK(L >= 1 && L <= G, DSV3_ERR_USAGE,
                   "router: num_limited_groups = %" PRId64
                   ", expected 1 <= num_limited_groups <= num_groups = %" PRId64,
                   L, G);
        DSV3_CHECK(K <= L * (E / G), DSV3_ERR_USAGE,
                   "router: top_k = %" PRId64 " exceeds the %" PRId64
                   " experts of num_limited_groups = %" PRId64 " groups",
                   K, L * (E / G), L);
    }
    DSV3_CHECK(args->sigmoid == 0 || args->sigmoid == 1, DSV3_ERR_USAGE,
               "router: sigmoid = %d, expected 0 (softmax) or 1", args->sigmoid);
    DSV3_CHECK(args->route_norm == 0 || args->route_norm == 1, DSV3_ERR_USAGE,
               "router: route_norm = %d, expected 0 or 1", args->route_norm);
    DSV3_CHECK(isfinite(args->route_scale), DSV3_ERR_USAGE,
               "router: route_scale = %g, expected a finite number", (double)args->route_scale);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_router_forward(const float *scores, const int32_t *topk_idx,
                                      const float *weights, const int64_t *counts,
                                      const float *logits, int64_t N, const Dsv3RouterArgs *args) {
    DSV3_CALL(router_check_args(args, N));
    DSV3_CHECK(counts != NULL, DSV3_ERR_USAGE, "router: counts is NULL");
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(scores && topk_idx && weights && logits, DSV3_ERR_USAGE,
               "router: scores, topk_idx, weights and logits must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_router_backward(const float *dlogits, const float *dweights,
                                       const float *scores, const int32_t *topk_idx, int64_t N,
                                       const Dsv3RouterArgs *args) {
    DSV3_CALL(router_check_args(args, N));
    const int64_t E = args->num_experts, K = args->top_k;
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(dlogits && dweights && scores && topk_idx, DSV3_ERR_USAGE,
               "router: dlogits, dweights, scores and topk_idx must not be NULL");
    for (int64_t i = 0; i < N * K; i++)
        DSV3_CHECK(topk_idx[i] >= 0 && topk_idx[i] < E, DSV3_ERR_USAGE,
                   "router: topk_idx[%" PRId64 "][%" PRId64 "] = %" PRId32
                   " is not an expert in [0, %" PRId64 ")",
                   i / K, i % K, topk_idx[i], E);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_counts_accumulate(const int64_t *total, const int64_t *counts, int64_t n) {
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "counts_accumulate: n = %" PRId64 ", expected n >= 0", n);
    DSV3_CHECK(n == 0 || (total != NULL && counts != NULL), DSV3_ERR_USAGE,
               "counts_accumulate: total and counts must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_expert_bias_update(const float *bias, const int64_t *counts, int64_t E,
                                          double coeff) {
    DSV3_CHECK(E >= 1, DSV3_ERR_USAGE, "expert_bias_update: E = %" PRId64 ", expected E >= 1", E);
    DSV3_CHECK(bias != NULL && counts != NULL, DSV3_ERR_USAGE,
               "expert_bias_update: bias and counts must not be NULL");
    DSV3_CHECK(isfinite(coeff), DSV3_ERR_USAGE,
               "expert_bias_update: coeff = %g, expected a finite number", coeff);
    return DSV3_OK;
}

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

Dsv3Err dsv3_cpu_check_moe_plan(const int32_t *order, const int64_t *offsets,
                                const int32_t *topk_idx, int64_t N, int64_t K, int64_t E) {
    DSV3_CALL(permute_check_dims(N, K, 1));
    DSV3_CHECK(E >= 1, DSV3_ERR_USAGE, "moe_plan: E = %" PRId64 " experts, expected E >= 1", E);
    DSV3_CHECK(offsets != NULL, DSV3_ERR_USAGE, "moe_plan: offsets is NULL");
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(order && topk_idx, DSV3_ERR_USAGE, "moe_plan: order or topk_idx is NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_moe_gather(int64_t *N, const float *xs, const float *x, const int32_t *order,
                                  int64_t M, int64_t K, int64_t D) {
    DSV3_CALL(permute_tokens_of_rows(N, M, K, D));
    if (M == 0) return DSV3_OK;
    DSV3_CHECK(xs && x && order, DSV3_ERR_USAGE, "moe_gather: xs, x and order must not be NULL");
    return dsv3_cpu_check_moe_order(order, M);
}

Dsv3Err dsv3_cpu_check_moe_gather_backward(int64_t *N, const float *dx, const float *dxs,
                                           const int32_t *order, int64_t M, int64_t K, int64_t D) {
    DSV3_CALL(permute_tokens_of_rows(N, M, K, D));
    if (M == 0) return DSV3_OK;
    DSV3_CHECK(dx && dxs && order, DSV3_ERR_USAGE,
               "moe_gather_backward: dx, dxs and order must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_moe_combine_forward(const float *out, const float *ys, const float *weights,
                                           const int32_t *order, int64_t N, int64_t K, int64_t D) {
    DSV3_CALL(permute_check_dims(N, K, D));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(out && ys && weights && order, DSV3_ERR_USAGE,
               "moe_combine: out, ys, weights and order must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_moe_combine_backward(const float *dys, const float *dweights,
                                            const float *dout, const float *ys,
                                            const float *weights, const int32_t *order, int64_t N,
                                            int64_t K, int64_t D) {
    DSV3_CALL(permute_check_dims(N, K, D));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(dys && dweights && dout && ys && weights && order, DSV3_ERR_USAGE,
               "moe_combine_backward: dys, dweights, dout, ys, weights and order must not be NULL");
    return DSV3_OK;
}

static Dsv3Err experts_check_offsets(const int64_t *offsets, int64_t E, int64_t D, int64_t F) {
    DSV3_CHECK(E >= 1, DSV3_ERR_USAGE, "experts: E = %" PRId64 ", expected E >= 1", E);
    DSV3_CHECK(D >= 1, DSV3_ERR_USAGE, "experts: D = %" PRId64 ", expected D >= 1", D);
    DSV3_CHECK(F >= 1, DSV3_ERR_USAGE, "experts: F = %" PRId64 ", expected F >= 1", F);
    DSV3_CHECK(offsets != NULL, DSV3_ERR_USAGE, "experts: offsets is NULL");
    DSV3_CHECK(offsets[0] == 0, DSV3_ERR_USAGE, "experts: offsets[0] = %" PRId64 ", expected 0",
               offsets[0]);
    for (int64_t e = 0; e < E; e++)
        DSV3_CHECK(offsets[e + 1] >= offsets[e], DSV3_ERR_USAGE,
                   "experts: offsets[%" PRId64 "] = %" PRId64 " < offsets[%" PRId64 "] = %" PRId64
                   ", expected offsets to be non-decreasing",
                   e + 1, offsets[e + 1], e, offsets[e]);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_experts_forward(const float *ys, const float *h1, const float *h3,
                                       const float *xs, const float *w1, const float *w2,
                                       const float *w3, const int64_t *offsets, int64_t E,
                                       int64_t D, int64_t F) {
    DSV3_CALL(experts_check_offsets(offsets, E, D, F));
    if (offsets[E] == 0) return DSV3_OK;
    DSV3_CHECK(ys && h1 && h3 && xs && w1 && w2 && w3, DSV3_ERR_USAGE,
               "experts: ys, h1, h3, xs, w1, w2 and w3 must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_experts_backward(const float *dxs, const float *dw1, const float *dw2,
                                        const float *dw3, const float *dys, const float *xs,
                                        const float *h1, const float *h3, const float *w1,
                                        const float *w2, const float *w3, const int64_t *offsets,
                                        int64_t E, int64_t D, int64_t F) {
    DSV3_CALL(experts_check_offsets(offsets, E, D, F));
    if (offsets[E] == 0) return DSV3_OK;
    DSV3_CHECK(dxs && dw1 && dw2 && dw3 && dys && xs && h1 && h3 && w1 && w2 && w3, DSV3_ERR_USAGE,
               "experts: no tensor of the backward may be NULL");
    return DSV3_OK;
}
