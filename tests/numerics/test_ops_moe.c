// Numerics of the MoE ops against PyTorch in float64 (tests/reference/ops_moe.py): the router
// with every option, the token permutation and combine, the routed experts, and a whole routed
// MoE block (gate linear → router → plan → gather → experts → combine, forward and backward).
//
// Usage: test_ops_moe CASE_DIR. Both the reference and the fast version of every op (a
// context of DSV3_BACKEND_CPU_REFERENCE, then of DSV3_BACKEND_CPU) run in float32 on the same
// inputs; each float output and gradient must be within TOLERANCE relative
// error (‖got − expected‖ / ‖expected‖) of the float64 expectation, and each integer output
// (the choice, the plan, the counts) must be exact. The order of a token's K experts is free,
// so the router's choice and weights are compared per expert (dense (N, E) arrays). Prints one
// line per check and exits non-zero when any check fails.
//
// Legend: N tokens, E experts, K experts per token, G expert groups, L groups a token may use,
// D model width, F expert hidden width, M = N × K routed rows.
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

#include "case.h"
#include "kernels/kernels.h"
#include "tests/kernels_test.h"

#define TOLERANCE 1e-4

// Columns of the check lines: sub-case, check.
enum { CASE_WIDTH = 26, WHAT_WIDTH = 20 };

// Every tensor of these ops is fp32.
static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

// Both versions of every op used here, so that each case runs them the same way: one context
// each.
typedef struct {
    const char *name;
    Dsv3Backend backend;
} Impl;

static const Impl IMPLS[] = {
    {"reference", DSV3_BACKEND_CPU_REFERENCE},
    {"fast", DSV3_BACKEND_CPU},
};
enum { IMPL_COUNT = sizeof IMPLS / sizeof IMPLS[0] };

// Contexts sized for the router, the permutation and the experts of the shape in scope.
#define ROUTER(DIRECTION) SIZED(kc, ROUTER_##DIRECTION, .N = N, .E = E, .K = K)
#define PLAN SIZED(kc, MOE_PLAN, .N = N, .K = K, .E = E)
#define GATHER_BACKWARD SIZED(kc, MOE_GATHER_BACKWARD, .M = M, .K = K, .D = D)
#define COMBINE(DIRECTION) SIZED(kc, MOE_COMBINE_##DIRECTION, .N = N, .K = K, .D = D)
#define EXPERTS(DIRECTION) SIZED(kc, EXPERTS_##DIRECTION, .E = E, .D = D, .F = Fh, .M = M)

// Reads dims (N, E, K, G, L, sigmoid, route_norm, D, F) and params (route_scale).
static Dsv3Err read_router_args(Dsv3Case *c, Dsv3RouterArgs *args, int64_t *N, int64_t *D,
                                int64_t *Fh) {
    int32_t *dims = NULL;
    double *params = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    DSV3_CALL(dsv3_case_read_f64(c, &params, NULL, "params"));
    *N = dims[0];
    *args =
        (Dsv3RouterArgs){dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], (float)params[0]};
    *D = dims[7];
    *Fh = dims[8];
    return DSV3_OK;
}

// chosen (N, E) = 1 where the token chose the expert; weights_dense (N, E) its weight there.
static Dsv3Err densify(Dsv3Case *c, int64_t **chosen, float **weights_dense, const int32_t *idx,
                       const float *weights, int64_t N, int64_t E, int64_t K) {
    DSV3_CALL(DSV3_CASE_BUFFER(c, *chosen, N * E, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, *weights_dense, N * E, NULL));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            (*chosen)[n * E + idx[n * K + k]] = 1;
            (*weights_dense)[n * E + idx[n * K + k]] = weights[n * K + k];
        }
    return DSV3_OK;
}

static Dsv3Err test_router(Dsv3Case *c, Dsv3KernelContext *kc) {
    Dsv3RouterArgs a;
    int64_t N, D, Fh;
    DSV3_CALL(read_router_args(c, &a, &N, &D, &Fh));
    const int64_t E = a.num_experts, K = a.top_k;
    float *logits = NULL, *bias = NULL, *g = NULL;
    int32_t *has_bias = NULL, *idx = NULL;
    float *scores = NULL, *weights = NULL, *dweights = NULL, *dlogits = NULL, *wd = NULL;
    int64_t *counts = NULL, *chosen = NULL;
    DSV3_CALL(dsv3_case_read_f32(c, &logits, NULL, "logits"));    // (N, E)
    DSV3_CALL(dsv3_case_read_f32(c, &bias, NULL, "expert_bias")); // (E)
    DSV3_CALL(dsv3_case_read_i32(c, &has_bias, NULL, "has_bias"));
    DSV3_CALL(dsv3_case_read_f32(c, &g, NULL, "g")); // (N, E)
    DSV3_CALL(DSV3_CASE_BUFFER(c, scores, N * E, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, idx, N * K, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, weights, N * K, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, counts, E, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dweights, N * K, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dlogits, N * E, NULL));
    DSV3_CALL(dsv3_router_forward(ROUTER(FORWARD), F32, scores, idx, weights, counts, logits,
                                  has_bias[0] ? bias : NULL, N, &a));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            dweights[n * K + k] = g[n * E + idx[n * K + k]];
    DSV3_CALL(dsv3_router_backward(ROUTER(BACKWARD), F32, dlogits, dweights, scores, idx, N, &a));
    DSV3_CALL(densify(c, &chosen, &wd, idx, weights, N, E, K));
    DSV3_CALL(dsv3_case_check(c, "scores", scores, N * E, "scores"));
    DSV3_CALL(dsv3_case_check_exact(c, "chosen experts", chosen, N * E, "chosen"));
    DSV3_CALL(dsv3_case_check_exact(c, "counts", counts, E, "counts"));
    DSV3_CALL(dsv3_case_check(c, "weights", wd, N * E, "weights_dense"));
    DSV3_CALL(dsv3_case_check(c, "dlogits", dlogits, N * E, "dlogits"));
    return DSV3_OK;
}

static Dsv3Err test_permute(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL, *idx = NULL, *order = NULL;
    float *x = NULL, *weights = NULL, *ys = NULL, *dxs = NULL, *dout = NULL, *out = NULL;
    float *dx = NULL, *xs = NULL, *dys = NULL, *dweights = NULL;
    int64_t *offsets = NULL, *order64 = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    const int64_t N = dims[0], K = dims[1], E = dims[2], D = dims[3], M = N * K;
    DSV3_CALL(dsv3_case_read_i32(c, &idx, NULL, "topk_idx"));    // (N, K)
    DSV3_CALL(dsv3_case_read_f32(c, &x, NULL, "x"));             // (N, D)
    DSV3_CALL(dsv3_case_read_f32(c, &weights, NULL, "weights")); // (N, K)
    DSV3_CALL(dsv3_case_read_f32(c, &ys, NULL, "ys"));           // (M, D)
    DSV3_CALL(dsv3_case_read_f32(c, &dxs, NULL, "dxs"));         // (M, D)
    DSV3_CALL(dsv3_case_read_f32(c, &dout, NULL, "dout"));       // (N, D)
    // (N, D) each: the combine adds onto out, the gather backward onto dx.
    DSV3_CALL(dsv3_case_read_f32(c, &out, NULL, "out0"));
    DSV3_CALL(dsv3_case_read_f32(c, &dx, NULL, "dx0"));
    DSV3_CALL(DSV3_CASE_BUFFER(c, order, M, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, offsets, E + 1, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, xs, M * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dys, M * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dweights, N * K, NULL));
    DSV3_CALL(dsv3_moe_plan(PLAN, order, offsets, idx, N, K, E));
    DSV3_CALL(dsv3_moe_gather(kc, F32, xs, x, order, M, K, D));
    DSV3_CALL(dsv3_moe_gather_backward(GATHER_BACKWARD, F32, dx, dxs, order, M, K, D));
    DSV3_CALL(dsv3_moe_combine_forward(COMBINE(FORWARD), F32, out, ys, weights, order, N, K, D));
    DSV3_CALL(dsv3_moe_combine_backward(COMBINE(BACKWARD), F32, dys, dweights, dout, ys, weights,
                                        order, N, K, D));
    DSV3_CALL(DSV3_CASE_BUFFER(c, order64, M, NULL));
    for (int64_t j = 0; j < M; j++)
        order64[j] = order[j];
    DSV3_CALL(dsv3_case_check_exact(c, "order", order64, M, "order"));
    DSV3_CALL(dsv3_case_check_exact(c, "offsets", offsets, E + 1, "offsets"));
    DSV3_CALL(dsv3_case_check(c, "gather xs", xs, M * D, "xs"));
    DSV3_CALL(dsv3_case_check(c, "gather dx (added)", dx, N * D, "dx"));
    DSV3_CALL(dsv3_case_check(c, "combine out (added)", out, N * D, "out"));
    DSV3_CALL(dsv3_case_check(c, "combine dys", dys, M * D, "dys"));
    DSV3_CALL(dsv3_case_check(c, "combine dweights", dweights, N * K, "dweights"));
    return DSV3_OK;
}

static Dsv3Err test_experts(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL, *off32 = NULL;
    float *xs = NULL, *w1 = NULL, *w2 = NULL, *w3 = NULL, *dys = NULL;
    float *dw1 = NULL, *dw2 = NULL, *dw3 = NULL, *ys = NULL, *h1 = NULL, *h3 = NULL, *dxs = NULL;
    int64_t *offsets = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    const int64_t E = dims[0], D = dims[1], Fh = dims[2], M = dims[3];
    DSV3_CALL(dsv3_case_read_i32(c, &off32, NULL, "offsets")); // (E + 1)
    DSV3_CALL(DSV3_CASE_BUFFER(c, offsets, E + 1, NULL));
    for (int64_t e = 0; e <= E; e++)
        offsets[e] = off32[e];
    DSV3_CALL(dsv3_case_read_f32(c, &xs, NULL, "xs"));    // (M, D)
    DSV3_CALL(dsv3_case_read_f32(c, &w1, NULL, "w1"));    // (E, F, D)
    DSV3_CALL(dsv3_case_read_f32(c, &w2, NULL, "w2"));    // (E, D, F)
    DSV3_CALL(dsv3_case_read_f32(c, &w3, NULL, "w3"));    // (E, F, D)
    DSV3_CALL(dsv3_case_read_f32(c, &dys, NULL, "dys"));  // (M, D)
    DSV3_CALL(dsv3_case_read_f32(c, &dw1, NULL, "dw10")); // the weight gradients add onto these
    DSV3_CALL(dsv3_case_read_f32(c, &dw2, NULL, "dw20"));
    DSV3_CALL(dsv3_case_read_f32(c, &dw3, NULL, "dw30"));
    DSV3_CALL(DSV3_CASE_BUFFER(c, ys, M * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, h1, M * Fh, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, h3, M * Fh, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dxs, M * D, NULL));
    DSV3_CALL(
        dsv3_experts_forward(EXPERTS(FORWARD), F32, ys, h1, h3, xs, w1, w2, w3, offsets, E, D, Fh));
    DSV3_CALL(dsv3_experts_backward(EXPERTS(BACKWARD), F32, dxs, dw1, dw2, dw3, dys, xs, h1, h3, w1,
                                    w2, w3, offsets, E, D, Fh));
    DSV3_CALL(dsv3_case_check(c, "ys", ys, M * D, "ys"));
    DSV3_CALL(dsv3_case_check(c, "h1", h1, M * Fh, "h1"));
    DSV3_CALL(dsv3_case_check(c, "h3", h3, M * Fh, "h3"));
    DSV3_CALL(dsv3_case_check(c, "dxs", dxs, M * D, "dxs"));
    DSV3_CALL(dsv3_case_check(c, "dw1 (added)", dw1, E * Fh * D, "dw1"));
    DSV3_CALL(dsv3_case_check(c, "dw2 (added)", dw2, E * D * Fh, "dw2"));
    DSV3_CALL(dsv3_case_check(c, "dw3 (added)", dw3, E * Fh * D, "dw3"));
    return DSV3_OK;
}

// The routed part of an MoE block, forward and backward, chaining the ops as a layer would.
static Dsv3Err test_moe_block(Dsv3Case *c, Dsv3KernelContext *kc) {
    Dsv3RouterArgs a;
    int64_t N, D, Fh;
    DSV3_CALL(read_router_args(c, &a, &N, &D, &Fh));
    const int64_t E = a.num_experts, K = a.top_k, M = N * K;
    float *x = NULL, *gate = NULL, *w1 = NULL, *w2 = NULL, *w3 = NULL, *dout = NULL, *bias = NULL;
    int32_t *has_bias = NULL;
    DSV3_CALL(dsv3_case_read_f32(c, &x, NULL, "x"));       // (N, D)
    DSV3_CALL(dsv3_case_read_f32(c, &gate, NULL, "gate")); // (E, D)
    DSV3_CALL(dsv3_case_read_f32(c, &w1, NULL, "w1"));     // (E, F, D)
    DSV3_CALL(dsv3_case_read_f32(c, &w2, NULL, "w2"));     // (E, D, F)
    DSV3_CALL(dsv3_case_read_f32(c, &w3, NULL, "w3"));     // (E, F, D)
    DSV3_CALL(dsv3_case_read_f32(c, &dout, NULL, "dout")); // (N, D)
    DSV3_CALL(dsv3_case_read_f32(c, &bias, NULL, "expert_bias"));
    DSV3_CALL(dsv3_case_read_i32(c, &has_bias, NULL, "has_bias"));

    float *logits, *scores, *weights, *xs, *ys, *h1, *h3, *out;
    float *dys, *dweights, *dxs, *dx, *dlogits, *dgate, *dw1, *dw2, *dw3;
    int32_t *idx, *order;
    int64_t *counts, *offsets;
    DSV3_CALL(DSV3_CASE_BUFFER(c, logits, N * E, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, scores, N * E, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, weights, N * K, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, idx, N * K, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, counts, E, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, order, M, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, offsets, E + 1, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, xs, M * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, ys, M * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, h1, M * Fh, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, h3, M * Fh, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, out, N * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dys, M * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dweights, N * K, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dxs, M * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dx, N * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dlogits, N * E, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dgate, E * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dw1, E * Fh * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dw2, E * D * Fh, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dw3, E * Fh * D, NULL));

    // Forward.
    DSV3_CALL(dsv3_linear_forward(kc, F32, logits, x, gate, N, D, E));
    DSV3_CALL(dsv3_router_forward(ROUTER(FORWARD), F32, scores, idx, weights, counts, logits,
                                  has_bias[0] ? bias : NULL, N, &a));
    DSV3_CALL(dsv3_moe_plan(PLAN, order, offsets, idx, N, K, E));
    DSV3_CALL(dsv3_moe_gather(kc, F32, xs, x, order, M, K, D));
    DSV3_CALL(
        dsv3_experts_forward(EXPERTS(FORWARD), F32, ys, h1, h3, xs, w1, w2, w3, offsets, E, D, Fh));
    DSV3_CALL(dsv3_moe_combine_forward(COMBINE(FORWARD), F32, out, ys, weights, order, N, K, D));
    // Backward: dx collects the expert path (gather) and the gate path (linear).
    DSV3_CALL(dsv3_moe_combine_backward(COMBINE(BACKWARD), F32, dys, dweights, dout, ys, weights,
                                        order, N, K, D));
    DSV3_CALL(dsv3_experts_backward(EXPERTS(BACKWARD), F32, dxs, dw1, dw2, dw3, dys, xs, h1, h3, w1,
                                    w2, w3, offsets, E, D, Fh));
    DSV3_CALL(dsv3_moe_gather_backward(GATHER_BACKWARD, F32, dx, dxs, order, M, K, D));
    DSV3_CALL(dsv3_router_backward(ROUTER(BACKWARD), F32, dlogits, dweights, scores, idx, N, &a));
    DSV3_CALL(dsv3_linear_backward(kc, F32, dx, dgate, dlogits, x, gate, N, D, E, 1));

    DSV3_CALL(dsv3_case_check_exact(c, "counts", counts, E, "counts"));
    DSV3_CALL(dsv3_case_check(c, "out", out, N * D, "out"));
    DSV3_CALL(dsv3_case_check(c, "dx", dx, N * D, "dx"));
    DSV3_CALL(dsv3_case_check(c, "dgate", dgate, E * D, "dgate"));
    DSV3_CALL(dsv3_case_check(c, "dw1", dw1, E * Fh * D, "dw1"));
    DSV3_CALL(dsv3_case_check(c, "dw2", dw2, E * D * Fh, "dw2"));
    DSV3_CALL(dsv3_case_check(c, "dw3", dw3, E * Fh * D, "dw3"));
    return DSV3_OK;
}

static const char *const ROUTER_CASES[] = {
    "router_softmax",
    "router_softmax_bias",
    "router_sigmoid",
    "router_sigmoid_bias_norm",
    "router_softmax_norm_scale",
    "router_groups",
    "router_groups_softmax",
    "router_k1",
    "router_n1",
};
static const char *const EXPERTS_CASES[] = {"experts", "experts_one_row"};
static const char *const MOE_CASES[] = {"moe_softmax", "moe_groups"};

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR (written by tests/reference/ops_moe.py)\n", argv[0]);
        return 2;
    }
    Dsv3Case c;
    dsv3_case_init(&c, argv[1], TOLERANCE, DSV3_CASE_LINE_TABLE, CASE_WIDTH, WHAT_WIDTH);
    for (int i = 0; i < IMPL_COUNT; i++) {
        const Impl *impl = &IMPLS[i];
        Dsv3KernelContext kc;
        if (dsv3_kernel_context_create(&kc, impl->backend, KERNELS_TEST_NO_DEVICE) != DSV3_OK) {
            fprintf(stderr, "%s", dsv3_error_text());
            return 1;
        }
        for (size_t j = 0; j < COUNT(ROUTER_CASES); j++)
            DSV3_CASE_RUN(&c, impl->name, ROUTER_CASES[j], test_router(&c, &kc));
        DSV3_CASE_RUN(&c, impl->name, "permute", test_permute(&c, &kc));
        for (size_t j = 0; j < COUNT(EXPERTS_CASES); j++)
            DSV3_CASE_RUN(&c, impl->name, EXPERTS_CASES[j], test_experts(&c, &kc));
        for (size_t j = 0; j < COUNT(MOE_CASES); j++)
            DSV3_CASE_RUN(&c, impl->name, MOE_CASES[j], test_moe_block(&c, &kc));
        kernels_test_release(&kc);
    }
    printf("%s: %d failure(s)\n", c.failures ? "FAIL" : "PASS", c.failures);
    return c.failures ? 1 : 0;
}
