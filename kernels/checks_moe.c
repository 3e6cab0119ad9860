// checks_moe: the shared argument checks of the router, the load balancing, the MoE token
// permutation and the routed experts.
//
// Legend: N tokens, E experts, K experts per token, G expert groups, L groups a token may use,
// D model width, F expert hidden width, M = N × K routed rows.
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

#include "kernels/checks.h"

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

Dsv3Err dsv3_check_router_forward(const void *scores, const void *topk_idx, const void *weights,
                                  const void *counts, const void *logits, int64_t N,
                                  const Dsv3RouterArgs *args) {
    DSV3_CALL(router_check_args(args, N));
    DSV3_CHECK(counts != NULL, DSV3_ERR_USAGE, "router: counts is NULL");
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(scores && topk_idx && weights && logits, DSV3_ERR_USAGE,
               "router: scores, topk_idx, weights and logits must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_router_backward(const void *dlogits, const void *dweights, const void *scores,
                                   const void *topk_idx, int64_t N, const Dsv3RouterArgs *args) {
    DSV3_CALL(router_check_args(args, N));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(dlogits && dweights && scores && topk_idx, DSV3_ERR_USAGE,
               "router: dlogits, dweights, scores and topk_idx must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_counts_accumulate(const void *total, const void *counts, int64_t n) {
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "counts_accumulate: n = %" PRId64 ", expected n >= 0", n);
    DSV3_CHECK(n == 0 || (total != NULL && counts != NULL), DSV3_ERR_USAGE,
               "counts_accumulate: total and counts must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_expert_bias_update(const void *bias, const void *counts, int64_t E,
                                      double coeff) {
    DSV3_CHECK(E >= 1, DSV3_ERR_USAGE, "expert_bias_update: E = %" PRId64 ", expected E >= 1", E);
    DSV3_CHECK(bias != NULL && counts != NULL, DSV3_ERR_USAGE,
               "expert_bias_update: bias and counts must not be NULL");
    DSV3_CHECK(isfinite(coeff), DSV3_ERR_USAGE,
               "expert_bias_update: coeff = %g, expected a finite number", coeff);
    return DSV3_OK;
}

// ---- permutation ----

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

Dsv3Err dsv3_check_moe_plan(const void *order, const void *offsets, const void *topk_idx, int64_t N,
                            int64_t K, int64_t E) {
    DSV3_CALL(permute_check_dims(N, K, 1));
    DSV3_CHECK(E >= 1, DSV3_ERR_USAGE, "moe_plan: E = %" PRId64 " experts, expected E >= 1", E);
    DSV3_CHECK(offsets != NULL, DSV3_ERR_USAGE, "moe_plan: offsets is NULL");
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(order && topk_idx, DSV3_ERR_USAGE, "moe_plan: order or topk_idx is NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_moe_gather(int64_t *N, const void *xs, const void *x, const void *order,
                              int64_t M, int64_t K, int64_t D) {
    DSV3_CALL(permute_tokens_of_rows(N, M, K, D));
    if (M == 0) return DSV3_OK;
    DSV3_CHECK(xs && x && order, DSV3_ERR_USAGE, "moe_gather: xs, x and order must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_moe_gather_backward(int64_t *N, const void *dx, const void *dxs,
                                       const void *order, int64_t M, int64_t K, int64_t D) {
    DSV3_CALL(permute_tokens_of_rows(N, M, K, D));
    if (M == 0) return DSV3_OK;
    DSV3_CHECK(dx && dxs && order, DSV3_ERR_USAGE,
               "moe_gather_backward: dx, dxs and order must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_moe_combine_forward(const void *out, const void *ys, const void *weights,
                                       const void *order, int64_t N, int64_t K, int64_t D) {
    DSV3_CALL(permute_check_dims(N, K, D));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(out && ys && weights && order, DSV3_ERR_USAGE,
               "moe_combine: out, ys, weights and order must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_moe_combine_backward(const void *dys, const void *dweights, const void *dout,
                                        const void *ys, const void *weights, const void *order,
                                        int64_t N, int64_t K, int64_t D) {
    DSV3_CALL(permute_check_dims(N, K, D));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(dys && dweights && dout && ys && weights && order, DSV3_ERR_USAGE,
               "moe_combine_backward: dys, dweights, dout, ys, weights and order must not be NULL");
    return DSV3_OK;
}

// ---- routed experts ----

Dsv3Err dsv3_check_experts_sizes(const void *offsets, int64_t E, int64_t D, int64_t F) {
    DSV3_CHECK(E >= 1, DSV3_ERR_USAGE, "experts: E = %" PRId64 ", expected E >= 1", E);
    DSV3_CHECK(D >= 1, DSV3_ERR_USAGE, "experts: D = %" PRId64 ", expected D >= 1", D);
    DSV3_CHECK(F >= 1, DSV3_ERR_USAGE, "experts: F = %" PRId64 ", expected F >= 1", F);
    DSV3_CHECK(offsets != NULL, DSV3_ERR_USAGE, "experts: offsets is NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_experts_offsets(const int64_t *offsets, int64_t E) {
    DSV3_CHECK(offsets[0] == 0, DSV3_ERR_USAGE, "experts: offsets[0] = %" PRId64 ", expected 0",
               offsets[0]);
    for (int64_t e = 0; e < E; e++)
        DSV3_CHECK(offsets[e + 1] >= offsets[e], DSV3_ERR_USAGE,
                   "experts: offsets[%" PRId64 "] = %" PRId64 " < offsets[%" PRId64 "] = %" PRId64
                   ", expected offsets to be non-decreasing",
                   e + 1, offsets[e + 1], e, offsets[e]);
    return DSV3_OK;
}

Dsv3Err dsv3_check_experts_forward(const void *ys, const void *h1, const void *h3, const void *xs,
                                   const void *w1, const void *w2, const void *w3, int64_t M) {
    if (M == 0) return DSV3_OK;
    DSV3_CHECK(ys && h1 && h3 && xs && w1 && w2 && w3, DSV3_ERR_USAGE,
               "experts: ys, h1, h3, xs, w1, w2 and w3 must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_experts_backward(const void *dxs, const void *dw1, const void *dw2,
                                    const void *dw3, const void *dys, const void *xs,
                                    const void *h1, const void *h3, const void *w1, const void *w2,
                                    const void *w3, int64_t M) {
    if (M == 0) return DSV3_OK;
    DSV3_CHECK(dxs && dw1 && dw2 && dw3 && dys && xs && h1 && h3 && w1 && w2 && w3, DSV3_ERR_USAGE,
               "experts: no tensor of the backward may be NULL");
    return DSV3_OK;
}
