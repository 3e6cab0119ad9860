// Numerics of the MoE ops against PyTorch in float64 (tests/reference/ops_moe.py): the router
// with every option, the token permutation and combine, the routed experts, and a whole routed
// MoE block (gate linear → router → plan → gather → experts → combine, forward and backward).
//
// Usage: test_ops_moe CASE_DIR. Both the reference and the fast version of every op run in
// float32 on the same inputs; each float output and gradient must be within TOLERANCE relative
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
#include <string.h>

#include "common/core/alloc.h"
#include "kernels/kernels.h"
#include "kernels/kernels_reference.h"
#include "npy.h"

#define TOLERANCE 1e-4

enum { PATH_CAPACITY = 256, MAX_BUFFERS = 64 };

// Both versions of every op used here, so that each case runs them the same way.
typedef struct {
    const char *name;
    Dsv3Err (*router_forward)(float *, int32_t *, float *, int64_t *, const float *,
                              const float *, int64_t, const Dsv3RouterArgs *);
    Dsv3Err (*router_backward)(float *, const float *, const float *, const int32_t *, int64_t,
                               const Dsv3RouterArgs *);
    Dsv3Err (*plan)(int32_t *, int64_t *, const int32_t *, int64_t, int64_t, int64_t);
    Dsv3Err (*gather)(float *, const float *, const int32_t *, int64_t, int64_t, int64_t);
    Dsv3Err (*gather_backward)(float *, const float *, const int32_t *, int64_t, int64_t,
                               int64_t);
    Dsv3Err (*combine_forward)(float *, const float *, const float *, const int32_t *, int64_t,
                               int64_t, int64_t);
    Dsv3Err (*combine_backward)(float *, float *, const float *, const float *, const float *,
                                const int32_t *, int64_t, int64_t, int64_t);
    Dsv3Err (*experts_forward)(float *, float *, float *, const float *, const float *,
                               const float *, const float *, const int64_t *, int64_t, int64_t,
                               int64_t);
    Dsv3Err (*experts_backward)(float *, float *, float *, float *, const float *, const float *,
                                const float *, const float *, const float *, const float *,
                                const float *, const int64_t *, int64_t, int64_t, int64_t);
    Dsv3Err (*linear_forward)(float *, const float *, const float *, int64_t, int64_t, int64_t);
    Dsv3Err (*linear_backward)(float *, float *, const float *, const float *, const float *,
                               int64_t, int64_t, int64_t, int);
} Impl;

static const Impl IMPLS[] = {
    {"reference", dsv3_router_forward_reference, dsv3_router_backward_reference,
     dsv3_moe_plan_reference, dsv3_moe_gather_reference, dsv3_moe_gather_backward_reference,
     dsv3_moe_combine_forward_reference, dsv3_moe_combine_backward_reference,
     dsv3_experts_forward_reference, dsv3_experts_backward_reference,
     dsv3_linear_forward_reference, dsv3_linear_backward_reference},
    {"fast", dsv3_router_forward, dsv3_router_backward, dsv3_moe_plan, dsv3_moe_gather,
     dsv3_moe_gather_backward, dsv3_moe_combine_forward, dsv3_moe_combine_backward,
     dsv3_experts_forward, dsv3_experts_backward, dsv3_linear_forward, dsv3_linear_backward},
};
enum { IMPL_COUNT = sizeof IMPLS / sizeof IMPLS[0] };

static const char *case_root;
static int failures;

// Every buffer of a case is registered here and released together when the case ends.
static void *buffers[MAX_BUFFERS];
static int buffer_count;

static Dsv3Err keep(void *ptr) {
    if (buffer_count == MAX_BUFFERS) {
        dsv3_free(ptr);
        DSV3_RAISE(DSV3_ERR_INTERNAL, "more than %d buffers in one case", MAX_BUFFERS);
    }
    buffers[buffer_count++] = ptr;
    return DSV3_OK;
}

static void release_all(void) {
    for (int i = 0; i < buffer_count; i++) dsv3_free(buffers[i]);
    buffer_count = 0;
}

static Dsv3Err read_f32(float **out, const char *c, const char *name) {
    char path[PATH_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", c, name);
    int64_t n = 0;
    DSV3_CALL(dsv3_npy_read_f32(out, &n, case_root, path));
    DSV3_CALL(keep(*out));
    return DSV3_OK;
}

static Dsv3Err read_f64(double **out, int64_t *count, const char *c, const char *name) {
    char path[PATH_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", c, name);
    int64_t n = 0;
    DSV3_CALL(dsv3_npy_read_f64(out, &n, case_root, path));
    if (count) *count = n;
    DSV3_CALL(keep(*out));
    return DSV3_OK;
}

static Dsv3Err read_i32(int32_t **out, int64_t *count, const char *c, const char *name) {
    char path[PATH_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", c, name);
    int64_t n = 0;
    DSV3_CALL(dsv3_npy_read_i32(out, &n, case_root, path));
    DSV3_CALL(keep(*out));
    if (count) *count = n;
    return DSV3_OK;
}

// `count` zeroed elements of `size` bytes, or a copy of `init` when given.
static Dsv3Err make(void **out, int64_t count, size_t size, const void *init) {
    DSV3_CALL(dsv3_calloc(out, (size_t)(count > 0 ? count : 1), size, "numerics buffer"));
    DSV3_CALL(keep(*out));
    if (init && count > 0) memcpy(*out, init, (size_t)count * size);
    return DSV3_OK;
}

static void report(const Impl *impl, const char *c, const char *what, const char *result,
                   int ok) {
    printf("%-9s %-26s %-20s %s  %s\n", impl->name, c, what, result, ok ? "ok" : "FAIL");
    failures += !ok;
}

// Compares `got` (count) with the float64 expectation `expected_name`.
static Dsv3Err check(const Impl *impl, const char *c, const char *what, const float *got,
                     int64_t count, const char *expected_name) {
    double *expected = NULL;
    int64_t expected_count = 0;
    DSV3_CALL(read_f64(&expected, &expected_count, c, expected_name));
    DSV3_CHECK(expected_count == count, DSV3_ERR_USAGE,
               "%s/%s has %" PRId64 " elements, the op produced %" PRId64, c, expected_name,
               expected_count, count);
    const double err = dsv3_npy_relative_error(got, expected, count);
    char result[PATH_CAPACITY];
    snprintf(result, sizeof result, "rel err %.3e", err);
    report(impl, c, what, result, err <= TOLERANCE);
    return DSV3_OK;
}

// Integers must match exactly; the line shows how many differ.
static Dsv3Err check_exact(const Impl *impl, const char *c, const char *what, const int64_t *got,
                           int64_t count, const char *expected_name) {
    int32_t *expected = NULL;
    int64_t expected_count = 0;
    DSV3_CALL(read_i32(&expected, &expected_count, c, expected_name));
    DSV3_CHECK(expected_count == count, DSV3_ERR_USAGE,
               "%s/%s has %" PRId64 " elements, the op produced %" PRId64, c, expected_name,
               expected_count, count);
    int64_t wrong = 0;
    for (int64_t i = 0; i < count; i++) wrong += got[i] != expected[i];
    char result[PATH_CAPACITY];
    snprintf(result, sizeof result, "%" PRId64 " of %" PRId64 " differ", wrong, count);
    report(impl, c, what, result, wrong == 0);
    return DSV3_OK;
}

// Reads dims (N, E, K, G, L, sigmoid, route_norm, D, F) and params (route_scale).
static Dsv3Err read_router_args(Dsv3RouterArgs *args, int64_t *N, int64_t *D, int64_t *Fh,
                                const char *c) {
    int32_t *dims = NULL;
    double *params = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    DSV3_CALL(read_f64(&params, NULL, c, "params"));
    *N = dims[0];
    *args = (Dsv3RouterArgs){dims[1], dims[2], dims[3], dims[4], dims[5], dims[6],
                             (float)params[0]};
    *D = dims[7];
    *Fh = dims[8];
    return DSV3_OK;
}

// chosen (N, E) = 1 where the token chose the expert; weights_dense (N, E) its weight there.
static Dsv3Err densify(int64_t **chosen, float **weights_dense, const int32_t *idx,
                       const float *weights, int64_t N, int64_t E, int64_t K) {
    DSV3_CALL(make((void **)chosen, N * E, sizeof(int64_t), NULL));
    DSV3_CALL(make((void **)weights_dense, N * E, sizeof(float), NULL));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            (*chosen)[n * E + idx[n * K + k]] = 1;
            (*weights_dense)[n * E + idx[n * K + k]] = weights[n * K + k];
        }
    return DSV3_OK;
}

static Dsv3Err test_router(const Impl *impl, const char *c) {
    Dsv3RouterArgs a;
    int64_t N, D, Fh;
    DSV3_CALL(read_router_args(&a, &N, &D, &Fh, c));
    const int64_t E = a.num_experts, K = a.top_k;
    float *logits = NULL, *bias = NULL, *g = NULL;
    int32_t *has_bias = NULL, *idx = NULL;
    float *scores = NULL, *weights = NULL, *dweights = NULL, *dlogits = NULL, *wd = NULL;
    int64_t *counts = NULL, *chosen = NULL;
    DSV3_CALL(read_f32(&logits, c, "logits"));    // (N, E)
    DSV3_CALL(read_f32(&bias, c, "expert_bias")); // (E)
    DSV3_CALL(read_i32(&has_bias, NULL, c, "has_bias"));
    DSV3_CALL(read_f32(&g, c, "g"));              // (N, E)
    DSV3_CALL(make((void **)&scores, N * E, sizeof(float), NULL));
    DSV3_CALL(make((void **)&idx, N * K, sizeof(int32_t), NULL));
    DSV3_CALL(make((void **)&weights, N * K, sizeof(float), NULL));
    DSV3_CALL(make((void **)&counts, E, sizeof(int64_t), NULL));
    DSV3_CALL(make((void **)&dweights, N * K, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dlogits, N * E, sizeof(float), NULL));
    DSV3_CALL(impl->router_forward(scores, idx, weights, counts, logits,
                                   has_bias[0] ? bias : NULL, N, &a));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) dweights[n * K + k] = g[n * E + idx[n * K + k]];
    DSV3_CALL(impl->router_backward(dlogits, dweights, scores, idx, N, &a));
    DSV3_CALL(densify(&chosen, &wd, idx, weights, N, E, K));
    DSV3_CALL(check(impl, c, "scores", scores, N * E, "scores"));
    DSV3_CALL(check_exact(impl, c, "chosen experts", chosen, N * E, "chosen"));
    DSV3_CALL(check_exact(impl, c, "counts", counts, E, "counts"));
    DSV3_CALL(check(impl, c, "weights", wd, N * E, "weights_dense"));
    DSV3_CALL(check(impl, c, "dlogits", dlogits, N * E, "dlogits"));
    return DSV3_OK;
}

static Dsv3Err test_permute(const Impl *impl) {
    const char *c = "permute";
    int32_t *dims = NULL, *idx = NULL, *order = NULL;
    float *x = NULL, *weights = NULL, *ys = NULL, *dxs = NULL, *dout = NULL, *out = NULL;
    float *dx = NULL, *xs = NULL, *dys = NULL, *dweights = NULL;
    int64_t *offsets = NULL, *order64 = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    const int64_t N = dims[0], K = dims[1], E = dims[2], D = dims[3], M = N * K;
    DSV3_CALL(read_i32(&idx, NULL, c, "topk_idx")); // (N, K)
    DSV3_CALL(read_f32(&x, c, "x"));                // (N, D)
    DSV3_CALL(read_f32(&weights, c, "weights"));    // (N, K)
    DSV3_CALL(read_f32(&ys, c, "ys"));              // (M, D)
    DSV3_CALL(read_f32(&dxs, c, "dxs"));            // (M, D)
    DSV3_CALL(read_f32(&dout, c, "dout"));          // (N, D)
    DSV3_CALL(read_f32(&out, c, "out0"));           // (N, D), the combine adds onto it
    DSV3_CALL(read_f32(&dx, c, "dx0"));             // (N, D), the gather backward adds onto it
    DSV3_CALL(make((void **)&order, M, sizeof(int32_t), NULL));
    DSV3_CALL(make((void **)&offsets, E + 1, sizeof(int64_t), NULL));
    DSV3_CALL(make((void **)&xs, M * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dys, M * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dweights, N * K, sizeof(float), NULL));
    DSV3_CALL(impl->plan(order, offsets, idx, N, K, E));
    DSV3_CALL(impl->gather(xs, x, order, M, K, D));
    DSV3_CALL(impl->gather_backward(dx, dxs, order, M, K, D));
    DSV3_CALL(impl->combine_forward(out, ys, weights, order, N, K, D));
    DSV3_CALL(impl->combine_backward(dys, dweights, dout, ys, weights, order, N, K, D));
    DSV3_CALL(make((void **)&order64, M, sizeof(int64_t), NULL));
    for (int64_t j = 0; j < M; j++) order64[j] = order[j];
    DSV3_CALL(check_exact(impl, c, "order", order64, M, "order"));
    DSV3_CALL(check_exact(impl, c, "offsets", offsets, E + 1, "offsets"));
    DSV3_CALL(check(impl, c, "gather xs", xs, M * D, "xs"));
    DSV3_CALL(check(impl, c, "gather dx (added)", dx, N * D, "dx"));
    DSV3_CALL(check(impl, c, "combine out (added)", out, N * D, "out"));
    DSV3_CALL(check(impl, c, "combine dys", dys, M * D, "dys"));
    DSV3_CALL(check(impl, c, "combine dweights", dweights, N * K, "dweights"));
    return DSV3_OK;
}

static Dsv3Err test_experts(const Impl *impl, const char *c) {
    int32_t *dims = NULL, *off32 = NULL;
    float *xs = NULL, *w1 = NULL, *w2 = NULL, *w3 = NULL, *dys = NULL;
    float *dw1 = NULL, *dw2 = NULL, *dw3 = NULL, *ys = NULL, *h1 = NULL, *h3 = NULL, *dxs = NULL;
    int64_t *offsets = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    const int64_t E = dims[0], D = dims[1], Fh = dims[2], M = dims[3];
    DSV3_CALL(read_i32(&off32, NULL, c, "offsets")); // (E + 1)
    DSV3_CALL(make((void **)&offsets, E + 1, sizeof(int64_t), NULL));
    for (int64_t e = 0; e <= E; e++) offsets[e] = off32[e];
    DSV3_CALL(read_f32(&xs, c, "xs"));   // (M, D)
    DSV3_CALL(read_f32(&w1, c, "w1"));   // (E, F, D)
    DSV3_CALL(read_f32(&w2, c, "w2"));   // (E, D, F)
    DSV3_CALL(read_f32(&w3, c, "w3"));   // (E, F, D)
    DSV3_CALL(read_f32(&dys, c, "dys")); // (M, D)
    DSV3_CALL(read_f32(&dw1, c, "dw10")); // the weight gradients add onto these
    DSV3_CALL(read_f32(&dw2, c, "dw20"));
    DSV3_CALL(read_f32(&dw3, c, "dw30"));
    DSV3_CALL(make((void **)&ys, M * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&h1, M * Fh, sizeof(float), NULL));
    DSV3_CALL(make((void **)&h3, M * Fh, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dxs, M * D, sizeof(float), NULL));
    DSV3_CALL(impl->experts_forward(ys, h1, h3, xs, w1, w2, w3, offsets, E, D, Fh));
    DSV3_CALL(impl->experts_backward(dxs, dw1, dw2, dw3, dys, xs, h1, h3, w1, w2, w3, offsets, E,
                                     D, Fh));
    DSV3_CALL(check(impl, c, "ys", ys, M * D, "ys"));
    DSV3_CALL(check(impl, c, "h1", h1, M * Fh, "h1"));
    DSV3_CALL(check(impl, c, "h3", h3, M * Fh, "h3"));
    DSV3_CALL(check(impl, c, "dxs", dxs, M * D, "dxs"));
    DSV3_CALL(check(impl, c, "dw1 (added)", dw1, E * Fh * D, "dw1"));
    DSV3_CALL(check(impl, c, "dw2 (added)", dw2, E * D * Fh, "dw2"));
    DSV3_CALL(check(impl, c, "dw3 (added)", dw3, E * Fh * D, "dw3"));
    return DSV3_OK;
}

// The routed part of an MoE block, forward and backward, chaining the ops as a layer would.
static Dsv3Err test_moe_block(const Impl *impl, const char *c) {
    Dsv3RouterArgs a;
    int64_t N, D, Fh;
    DSV3_CALL(read_router_args(&a, &N, &D, &Fh, c));
    const int64_t E = a.num_experts, K = a.top_k, M = N * K;
    float *x = NULL, *gate = NULL, *w1 = NULL, *w2 = NULL, *w3 = NULL, *dout = NULL, *bias = NULL;
    int32_t *has_bias = NULL;
    DSV3_CALL(read_f32(&x, c, "x"));       // (N, D)
    DSV3_CALL(read_f32(&gate, c, "gate")); // (E, D)
    DSV3_CALL(read_f32(&w1, c, "w1"));     // (E, F, D)
    DSV3_CALL(read_f32(&w2, c, "w2"));     // (E, D, F)
    DSV3_CALL(read_f32(&w3, c, "w3"));     // (E, F, D)
    DSV3_CALL(read_f32(&dout, c, "dout")); // (N, D)
    DSV3_CALL(read_f32(&bias, c, "expert_bias"));
    DSV3_CALL(read_i32(&has_bias, NULL, c, "has_bias"));

    float *logits, *scores, *weights, *xs, *ys, *h1, *h3, *out;
    float *dys, *dweights, *dxs, *dx, *dlogits, *dgate, *dw1, *dw2, *dw3;
    int32_t *idx, *order;
    int64_t *counts, *offsets;
    DSV3_CALL(make((void **)&logits, N * E, sizeof(float), NULL));
    DSV3_CALL(make((void **)&scores, N * E, sizeof(float), NULL));
    DSV3_CALL(make((void **)&weights, N * K, sizeof(float), NULL));
    DSV3_CALL(make((void **)&idx, N * K, sizeof(int32_t), NULL));
    DSV3_CALL(make((void **)&counts, E, sizeof(int64_t), NULL));
    DSV3_CALL(make((void **)&order, M, sizeof(int32_t), NULL));
    DSV3_CALL(make((void **)&offsets, E + 1, sizeof(int64_t), NULL));
    DSV3_CALL(make((void **)&xs, M * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&ys, M * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&h1, M * Fh, sizeof(float), NULL));
    DSV3_CALL(make((void **)&h3, M * Fh, sizeof(float), NULL));
    DSV3_CALL(make((void **)&out, N * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dys, M * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dweights, N * K, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dxs, M * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dx, N * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dlogits, N * E, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dgate, E * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dw1, E * Fh * D, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dw2, E * D * Fh, sizeof(float), NULL));
    DSV3_CALL(make((void **)&dw3, E * Fh * D, sizeof(float), NULL));

    // Forward.
    DSV3_CALL(impl->linear_forward(logits, x, gate, N, D, E));
    DSV3_CALL(impl->router_forward(scores, idx, weights, counts, logits,
                                   has_bias[0] ? bias : NULL, N, &a));
    DSV3_CALL(impl->plan(order, offsets, idx, N, K, E));
    DSV3_CALL(impl->gather(xs, x, order, M, K, D));
    DSV3_CALL(impl->experts_forward(ys, h1, h3, xs, w1, w2, w3, offsets, E, D, Fh));
    DSV3_CALL(impl->combine_forward(out, ys, weights, order, N, K, D));
    // Backward: dx collects the expert path (gather) and the gate path (linear).
    DSV3_CALL(impl->combine_backward(dys, dweights, dout, ys, weights, order, N, K, D));
    DSV3_CALL(impl->experts_backward(dxs, dw1, dw2, dw3, dys, xs, h1, h3, w1, w2, w3, offsets, E,
                                     D, Fh));
    DSV3_CALL(impl->gather_backward(dx, dxs, order, M, K, D));
    DSV3_CALL(impl->router_backward(dlogits, dweights, scores, idx, N, &a));
    DSV3_CALL(impl->linear_backward(dx, dgate, dlogits, x, gate, N, D, E, 1));

    DSV3_CALL(check_exact(impl, c, "counts", counts, E, "counts"));
    DSV3_CALL(check(impl, c, "out", out, N * D, "out"));
    DSV3_CALL(check(impl, c, "dx", dx, N * D, "dx"));
    DSV3_CALL(check(impl, c, "dgate", dgate, E * D, "dgate"));
    DSV3_CALL(check(impl, c, "dw1", dw1, E * Fh * D, "dw1"));
    DSV3_CALL(check(impl, c, "dw2", dw2, E * D * Fh, "dw2"));
    DSV3_CALL(check(impl, c, "dw3", dw3, E * Fh * D, "dw3"));
    return DSV3_OK;
}

static const char *const ROUTER_CASES[] = {
    "router_softmax",  "router_softmax_bias",       "router_sigmoid",
    "router_sigmoid_bias_norm", "router_softmax_norm_scale", "router_groups",
    "router_groups_softmax", "router_k1", "router_n1",
};
static const char *const EXPERTS_CASES[] = {"experts", "experts_one_row"};
static const char *const MOE_CASES[] = {"moe_softmax", "moe_groups"};

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

// Runs one case; an error (a missing file, a failing op) counts as a failure and is printed.
static void run(Dsv3Err err) {
    release_all();
    if (err != DSV3_OK) {
        fprintf(stderr, "%s\n", dsv3_error_text());
        dsv3_error_clear();
        failures++;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR (written by tests/reference/ops_moe.py)\n", argv[0]);
        return 2;
    }
    case_root = argv[1];
    for (int i = 0; i < IMPL_COUNT; i++) {
        const Impl *impl = &IMPLS[i];
        for (size_t j = 0; j < COUNT(ROUTER_CASES); j++) run(test_router(impl, ROUTER_CASES[j]));
        run(test_permute(impl));
        for (size_t j = 0; j < COUNT(EXPERTS_CASES); j++) run(test_experts(impl, EXPERTS_CASES[j]));
        for (size_t j = 0; j < COUNT(MOE_CASES); j++) run(test_moe_block(impl, MOE_CASES[j]));
    }
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
