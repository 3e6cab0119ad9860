// kernels_moe: the MoE ops (router, token permutation, routed experts), fast against reference.
//
// Random inputs of several shapes (odd sizes, one token, empty experts, group-limited routing,
// every router option); each output and gradient must match the reference version within
// TOLERANCE relative error, and the integer outputs (choice, plan, counts) exactly. Every shape
// runs with one thread and with two, so both of the experts' threading strategies are covered.
// Also: a few hand-made cases with known answers, and the argument checks. The fast ops run on
// a DSV3_BACKEND_CPU context, the reference ops on a DSV3_BACKEND_CPU_REFERENCE one, each with
// the workspace that dsv3_workspace_bytes asks for.
//
// Legend: N tokens, E experts, K experts per token, G expert groups, L groups a token may use,
// D model width, F expert hidden width, M = N × K routed rows.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <omp.h>

#include "common/core/alloc.h"
#include "kernels/kernels.h"
#include "tests/kernels_test.h"

// ‖fast − reference‖ / ‖reference‖ allowed for every float output.
static const double TOLERANCE = 1e-5;

// Thread counts every case runs with.
static const int THREAD_COUNTS[] = {1, 2};
enum { THREAD_COUNT_CASES = sizeof THREAD_COUNTS / sizeof THREAD_COUNTS[0] };

// Every tensor of these ops is fp32.
static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

// The fast and the reference backend, made once for all tests.
static Dsv3KernelContext cpu, reference;

static int contexts_create(void **state) {
    (void)state;
    return kernels_test_contexts_create(&cpu, &reference);
}

static int contexts_destroy(void **state) {
    (void)state;
    kernels_test_contexts_destroy(&cpu, &reference);
    return 0;
}

// Contexts sized for the router, the permutation and the experts of the shape in scope.
#define ROUTER(ctx, DIRECTION) SIZED((ctx), ROUTER_##DIRECTION, .N = N, .E = E, .K = K)
#define PLAN(ctx) SIZED((ctx), MOE_PLAN, .N = N, .K = K, .E = E)
#define GATHER_BACKWARD(ctx) SIZED((ctx), MOE_GATHER_BACKWARD, .M = M, .K = K, .D = D)
#define COMBINE(ctx, DIRECTION) SIZED((ctx), MOE_COMBINE_##DIRECTION, .N = N, .K = K, .D = D)
#define EXPERTS(ctx, DIRECTION)                                                                    \
    SIZED((ctx), EXPERTS_##DIRECTION, .E = E, .D = D, .F = F, .M = offsets[E])

// ---- helpers ----

static uint64_t rng_state;

static uint64_t rng_next(void) { return kernels_test_rng_next(&rng_state); }

// Uniform in [lo, hi).
static float rng_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(rng_next() >> 11) / 9007199254740992.0);
}

static float *random_floats(int64_t n, float lo, float hi) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++)
        p[i] = rng_uniform(lo, hi);
    return p;
}

static float *copy_floats(const float *src, int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    if (n > 0) memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

static void *zeros(int64_t n, size_t size) {
    void *p = calloc((size_t)(n > 0 ? n : 1), size);
    assert_non_null(p);
    return p;
}

static void assert_close(const float *fast, const float *ref, int64_t n, const char *what) {
    double err = kernels_test_relative_error(fast, ref, n);
    if (!(err <= TOLERANCE)) fail_msg("%s: relative error %.3g > %.3g", what, err, TOLERANCE);
}

// K distinct experts in [0, E) per token, in random order.
static int32_t *random_choice(int64_t N, int64_t K, int64_t E) {
    int32_t *idx = malloc((size_t)(N * K > 0 ? N * K : 1) * sizeof(int32_t));
    int32_t *perm = malloc((size_t)E * sizeof(int32_t));
    assert_non_null(idx);
    assert_non_null(perm);
    for (int64_t n = 0; n < N; n++) {
        for (int64_t e = 0; e < E; e++)
            perm[e] = (int32_t)e;
        for (int64_t k = 0; k < K; k++) { // partial Fisher–Yates
            int64_t j = k + (int64_t)(rng_next() % (uint64_t)(E - k));
            int32_t t = perm[k];
            perm[k] = perm[j];
            perm[j] = t;
            idx[n * K + k] = perm[k];
        }
    }
    free(perm);
    return idx;
}

static void expect_usage_error(Dsv3Err err, const char *fragment) {
    assert_int_equal(err, DSV3_ERR_USAGE);
    if (!strstr(dsv3_error_message(), fragment))
        fail_msg("message '%s' lacks '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

// ---- router ----

typedef struct {
    int64_t N, E, K, G, L;
    int sigmoid, route_norm;
    float route_scale;
    float bias_scale; // 0: no expert_bias; else bias uniform in ±bias_scale
} RouterCase;

static void check_router_case(const RouterCase *c) {
    const Dsv3RouterArgs args = {c->E, c->K, c->G, c->L, c->sigmoid, c->route_norm, c->route_scale};
    const int64_t N = c->N, E = c->E, K = c->K;
    float *logits = random_floats(N * E, -3.0f, 3.0f);
    float *bias = c->bias_scale > 0 ? random_floats(E, -c->bias_scale, c->bias_scale) : NULL;
    float *dweights = random_floats(N * K, -1.0f, 1.0f);
    float *s_ref = zeros(N * E, sizeof(float)), *w_ref = zeros(N * K, sizeof(float));
    float *dl_ref = zeros(N * E, sizeof(float));
    int32_t *i_ref = zeros(N * K, sizeof(int32_t));
    int64_t *c_ref = zeros(E, sizeof(int64_t));
    assert_int_equal(dsv3_router_forward(ROUTER(&reference, FORWARD), F32, s_ref, i_ref, w_ref,
                                         c_ref, logits, bias, N, &args),
                     DSV3_OK);
    assert_int_equal(dsv3_router_backward(ROUTER(&reference, BACKWARD), F32, dl_ref, dweights,
                                          s_ref, i_ref, N, &args),
                     DSV3_OK);
    int64_t total = 0;
    for (int64_t e = 0; e < E; e++)
        total += c_ref[e];
    assert_int_equal(total, N * K);

    for (int t = 0; t < THREAD_COUNT_CASES; t++) {
        omp_set_num_threads(THREAD_COUNTS[t]);
        float *s = zeros(N * E, sizeof(float)), *w = zeros(N * K, sizeof(float));
        float *dl = zeros(N * E, sizeof(float));
        int32_t *idx = zeros(N * K, sizeof(int32_t));
        int64_t *counts = zeros(E, sizeof(int64_t));
        assert_int_equal(dsv3_router_forward(ROUTER(&cpu, FORWARD), F32, s, idx, w, counts, logits,
                                             bias, N, &args),
                         DSV3_OK);
        assert_close(s, s_ref, N * E, "router scores");
        assert_memory_equal(idx, i_ref, (size_t)(N * K) * sizeof(int32_t));
        assert_memory_equal(counts, c_ref, (size_t)E * sizeof(int64_t));
        assert_close(w, w_ref, N * K, "router weights");
        assert_int_equal(
            dsv3_router_backward(ROUTER(&cpu, BACKWARD), F32, dl, dweights, s, idx, N, &args),
            DSV3_OK);
        assert_close(dl, dl_ref, N * E, "router dlogits");
        free(s), free(w), free(dl), free(idx), free(counts);
    }
    free(logits), free(bias), free(dweights), free(s_ref), free(w_ref), free(dl_ref), free(i_ref),
        free(c_ref);
}

static void test_router_matches_reference(void **state) {
    (void)state;
    rng_state = 1;
    static const RouterCase cases[] = {
        // N   E  K  G  L  sigmoid norm scale bias
        {37, 8, 3, 0, 0, 0, 0, 1.0f, 0.0f},    // debugmodel: softmax, no norm
        {1, 8, 3, 0, 0, 0, 0, 1.0f, 0.0f},     // one token
        {50, 8, 1, 0, 0, 1, 0, 1.0f, 0.0f},    // K = 1, sigmoid
        {64, 16, 4, 4, 2, 1, 1, 2.5f, 0.3f},   // group-limited, sigmoid, norm, bias
        {65, 16, 4, 4, 2, 0, 0, 16.0f, 0.0f},  // group-limited, softmax
        {300, 64, 6, 0, 0, 0, 0, 1.0f, 0.05f}, // 16B-like with bias
        {129, 64, 8, 8, 4, 1, 1, 2.5f, 0.5f},  // 671B-like routing
        {33, 7, 7, 0, 0, 0, 1, 0.5f, 1.0f},    // K = E, odd E
        {20, 12, 2, 6, 1, 0, 1, 1.0f, 0.2f},   // one group of 2 experts kept
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_router_case(&cases[i]);
}

// Equal scores: the choice goes to the lower expert index, in both versions.
static void test_router_ties_go_to_lower_index(void **state) {
    (void)state;
    const Dsv3RouterArgs args = {6, 3, 0, 0, 0, 0, 1.0f};
    const int64_t N = 1, E = 6, K = 3;
    const float logits[6] = {0.5f, 1.0f, 0.5f, 1.0f, 0.5f, 1.0f};
    float s[6], w[3];
    int32_t idx[3];
    int64_t counts[6];
    assert_int_equal(
        dsv3_router_forward(ROUTER(&cpu, FORWARD), F32, s, idx, w, counts, logits, NULL, 1, &args),
        DSV3_OK);
    assert_int_equal(idx[0], 1), assert_int_equal(idx[1], 3), assert_int_equal(idx[2], 5);
    const float tied[6] = {0, 0, 0, 0, 0, 0};
    assert_int_equal(dsv3_router_forward(ROUTER(&reference, FORWARD), F32, s, idx, w, counts, tied,
                                         NULL, 1, &args),
                     DSV3_OK);
    assert_int_equal(idx[0], 0), assert_int_equal(idx[1], 1), assert_int_equal(idx[2], 2);
    assert_int_equal(
        dsv3_router_forward(ROUTER(&cpu, FORWARD), F32, s, idx, w, counts, tied, NULL, 1, &args),
        DSV3_OK);
    assert_int_equal(idx[0], 0), assert_int_equal(idx[1], 1), assert_int_equal(idx[2], 2);
}

// The bias moves the choice but not the weights; groups fence the choice in.
static void test_router_bias_and_groups(void **state) {
    (void)state;
    // Sigmoid scores of these logits rise with the index; a bias on expert 0 makes it chosen.
    const float logits[8] = {-2.0f, -1.5f, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
    const float bias[8] = {5.0f, 0, 0, 0, 0, 0, 0, 0};
    float s[8], w[2];
    int32_t idx[2];
    int64_t counts[8];
    Dsv3RouterArgs args = {8, 2, 0, 0, 1, 0, 1.0f};
    const int64_t N = 1, E = 8, K = 2;
    assert_int_equal(
        dsv3_router_forward(ROUTER(&cpu, FORWARD), F32, s, idx, w, counts, logits, bias, 1, &args),
        DSV3_OK);
    assert_int_equal(idx[0], 0), assert_int_equal(idx[1], 7);
    assert_float_equal(w[0], 1.0f / (1.0f + expf(2.0f)), 1e-7);
    assert_int_equal(counts[0], 1), assert_int_equal(counts[7], 1), assert_int_equal(counts[3], 0);
    // Four groups of two; group scores 1+2, 3+4, 5+6, 7+8 (in sigmoid order); keep one group:
    // the last, so the second choice is expert 6, not expert 0 despite its bias.
    args.num_groups = 4, args.num_limited_groups = 1;
    assert_int_equal(
        dsv3_router_forward(ROUTER(&cpu, FORWARD), F32, s, idx, w, counts, logits, NULL, 1, &args),
        DSV3_OK);
    assert_int_equal(idx[0], 7), assert_int_equal(idx[1], 6);
    // With the bias, group 0 scores highest (5 + σ(−2) + σ(−1.5)): experts 0 and 1.
    assert_int_equal(dsv3_router_forward(ROUTER(&reference, FORWARD), F32, s, idx, w, counts,
                                         logits, bias, 1, &args),
                     DSV3_OK);
    assert_int_equal(idx[0], 0), assert_int_equal(idx[1], 1);
    assert_int_equal(
        dsv3_router_forward(ROUTER(&cpu, FORWARD), F32, s, idx, w, counts, logits, bias, 1, &args),
        DSV3_OK);
    assert_int_equal(idx[0], 0), assert_int_equal(idx[1], 1);
    // route_norm: the weights sum to route_scale.
    args.route_norm = 1, args.route_scale = 2.5f;
    assert_int_equal(
        dsv3_router_forward(ROUTER(&cpu, FORWARD), F32, s, idx, w, counts, logits, bias, 1, &args),
        DSV3_OK);
    assert_float_equal(w[0] + w[1], 2.5f, 1e-6);
}

static void test_router_argument_checks(void **state) {
    (void)state;
    float s[16], w[4], dl[16], logits[16] = {0};
    int32_t idx[4] = {0, 1, 2, 3};
    int64_t counts[16];
    // Each call's context is sized for its (N, args) pair.
#define ARGS_FORWARD(ctx, n, a)                                                                    \
    SIZED((ctx), ROUTER_FORWARD, .N = (n), .E = (a).num_experts, .K = (a).top_k), F32
#define ARGS_BACKWARD(ctx, n, a)                                                                   \
    SIZED((ctx), ROUTER_BACKWARD, .N = (n), .E = (a).num_experts, .K = (a).top_k), F32
    Dsv3RouterArgs args = {8, 9, 0, 0, 0, 0, 1.0f};
    expect_usage_error(
        dsv3_router_forward(ARGS_FORWARD(&cpu, 1, args), s, idx, w, counts, logits, NULL, 1, &args),
        "top_k = 9");
    expect_usage_error(dsv3_router_forward(ARGS_FORWARD(&reference, 1, args), s, idx, w, counts,
                                           logits, NULL, 1, &args),
                       "top_k = 9");
    args = (Dsv3RouterArgs){12, 2, 5, 1, 0, 0, 1.0f};
    expect_usage_error(
        dsv3_router_forward(ARGS_FORWARD(&cpu, 1, args), s, idx, w, counts, logits, NULL, 1, &args),
        "num_groups = 5 must divide num_experts = 12");
    args = (Dsv3RouterArgs){16, 2, 4, 5, 0, 0, 1.0f};
    expect_usage_error(
        dsv3_router_forward(ARGS_FORWARD(&cpu, 1, args), s, idx, w, counts, logits, NULL, 1, &args),
        "num_limited_groups = 5");
    args = (Dsv3RouterArgs){16, 9, 4, 2, 0, 0, 1.0f};
    expect_usage_error(
        dsv3_router_forward(ARGS_FORWARD(&cpu, 1, args), s, idx, w, counts, logits, NULL, 1, &args),
        "exceeds the 8 experts");
    args = (Dsv3RouterArgs){16, 4, 0, 0, 0, 0, 1.0f};
    expect_usage_error(dsv3_router_forward(ARGS_FORWARD(&cpu, -1, args), s, idx, w, counts, logits,
                                           NULL, -1, &args),
                       "N = -1");
    idx[2] = 16;
    expect_usage_error(dsv3_router_backward(ARGS_BACKWARD(&cpu, 1, args), dl, w, s, idx, 1, &args),
                       "topk_idx[0][2] = 16 is not an expert in [0, 16)");
    expect_usage_error(
        dsv3_router_backward(ARGS_BACKWARD(&reference, 1, args), dl, w, s, idx, 1, &args),
        "topk_idx[0][2] = 16");
    expect_usage_error(dsv3_router_forward(&cpu, F32, s, idx, w, counts, logits, NULL, 1, NULL),
                       "args is NULL");
#undef ARGS_FORWARD
#undef ARGS_BACKWARD
}

// ---- permutation ----

typedef struct {
    int64_t N, K, E, D;
} PermuteCase;

static void check_permute_case(const PermuteCase *c) {
    const int64_t N = c->N, K = c->K, E = c->E, D = c->D, M = N * K;
    int32_t *idx = random_choice(N, K, E);
    float *x = random_floats(N * D, -1.0f, 1.0f);
    float *ys = random_floats(M * D, -1.0f, 1.0f);
    float *dxs = random_floats(M * D, -1.0f, 1.0f);
    float *weights = random_floats(N * K, 0.0f, 1.0f);
    float *dout = random_floats(N * D, -1.0f, 1.0f);
    float *base = random_floats(N * D, -1.0f, 1.0f); // what += adds onto

    int32_t *o_ref = zeros(M, sizeof(int32_t));
    int64_t *off_ref = zeros(E + 1, sizeof(int64_t));
    assert_int_equal(dsv3_moe_plan(PLAN(&reference), o_ref, off_ref, idx, N, K, E), DSV3_OK);
    assert_int_equal(off_ref[0], 0);
    assert_int_equal(off_ref[E], M);
    for (int64_t e = 0; e < E; e++)
        for (int64_t j = off_ref[e]; j < off_ref[e + 1]; j++) {
            assert_int_equal(idx[o_ref[j]], e);
            if (j > off_ref[e]) assert_true(o_ref[j] > o_ref[j - 1]); // stable
        }
    float *xs_ref = zeros(M * D, sizeof(float));
    float *dx_ref = copy_floats(base, N * D), *out_ref = copy_floats(base, N * D);
    float *dys_ref = zeros(M * D, sizeof(float)), *dw_ref = zeros(N * K, sizeof(float));
    assert_int_equal(dsv3_moe_gather(&reference, F32, xs_ref, x, o_ref, M, K, D), DSV3_OK);
    assert_int_equal(
        dsv3_moe_gather_backward(GATHER_BACKWARD(&reference), F32, dx_ref, dxs, o_ref, M, K, D),
        DSV3_OK);
    assert_int_equal(dsv3_moe_combine_forward(COMBINE(&reference, FORWARD), F32, out_ref, ys,
                                              weights, o_ref, N, K, D),
                     DSV3_OK);
    assert_int_equal(dsv3_moe_combine_backward(COMBINE(&reference, BACKWARD), F32, dys_ref, dw_ref,
                                               dout, ys, weights, o_ref, N, K, D),
                     DSV3_OK);

    for (int t = 0; t < THREAD_COUNT_CASES; t++) {
        omp_set_num_threads(THREAD_COUNTS[t]);
        int32_t *o = zeros(M, sizeof(int32_t));
        int64_t *off = zeros(E + 1, sizeof(int64_t));
        assert_int_equal(dsv3_moe_plan(PLAN(&cpu), o, off, idx, N, K, E), DSV3_OK);
        assert_memory_equal(o, o_ref, (size_t)(M > 0 ? M : 1) * sizeof(int32_t));
        assert_memory_equal(off, off_ref, (size_t)(E + 1) * sizeof(int64_t));
        float *xs = zeros(M * D, sizeof(float));
        float *dx = copy_floats(base, N * D), *out = copy_floats(base, N * D);
        float *dys = zeros(M * D, sizeof(float)), *dw = zeros(N * K, sizeof(float));
        assert_int_equal(dsv3_moe_gather(&cpu, F32, xs, x, o, M, K, D), DSV3_OK);
        assert_memory_equal(xs, xs_ref, (size_t)(M * D > 0 ? M * D : 1) * sizeof(float));
        assert_int_equal(dsv3_moe_gather_backward(GATHER_BACKWARD(&cpu), F32, dx, dxs, o, M, K, D),
                         DSV3_OK);
        assert_close(dx, dx_ref, N * D, "gather backward dx");
        assert_int_equal(
            dsv3_moe_combine_forward(COMBINE(&cpu, FORWARD), F32, out, ys, weights, o, N, K, D),
            DSV3_OK);
        assert_close(out, out_ref, N * D, "combine out");
        assert_int_equal(dsv3_moe_combine_backward(COMBINE(&cpu, BACKWARD), F32, dys, dw, dout, ys,
                                                   weights, o, N, K, D),
                         DSV3_OK);
        assert_close(dys, dys_ref, M * D, "combine dys");
        assert_close(dw, dw_ref, N * K, "combine dweights");
        free(o), free(off), free(xs), free(dx), free(out), free(dys), free(dw);
    }
    free(idx), free(x), free(ys), free(dxs), free(weights), free(dout), free(base), free(o_ref),
        free(off_ref), free(xs_ref), free(dx_ref), free(out_ref), free(dys_ref), free(dw_ref);
}

static void test_permute_matches_reference(void **state) {
    (void)state;
    rng_state = 2;
    static const PermuteCase cases[] = {
        {1, 1, 1, 1},     {1, 3, 8, 5},     {37, 3, 8, 33}, {200, 6, 64, 17},
        {3000, 6, 64, 3}, {5000, 8, 16, 4}, {0, 3, 8, 4},   {100, 2, 300, 257},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_permute_case(&cases[i]);
}

// The plan of a tiny case, by hand: experts of (n, k) = [[2, 0], [0, 1], [2, 1]].
static void test_plan_by_hand(void **state) {
    (void)state;
    const int32_t idx[6] = {2, 0, 0, 1, 2, 1};
    int32_t order[6];
    int64_t offsets[4];
    const int32_t want_order[6] = {1, 2, 3, 5, 0, 4};
    const int64_t want_offsets[4] = {0, 2, 4, 6};
    const int64_t N = 3, K = 2, E = 3;
    assert_int_equal(dsv3_moe_plan(PLAN(&cpu), order, offsets, idx, N, K, E), DSV3_OK);
    assert_memory_equal(order, want_order, sizeof want_order);
    assert_memory_equal(offsets, want_offsets, sizeof want_offsets);
}

static void test_permute_argument_checks(void **state) {
    (void)state;
    int32_t idx[4] = {0, 1, 5, 2}, order[4];
    int64_t offsets[5];
    float x[8] = {0}, xs[8], w[4] = {0};
    int64_t N = 2, K = 2, E = 4, M = 4, D = 2;
    expect_usage_error(dsv3_moe_plan(PLAN(&cpu), order, offsets, idx, N, K, E),
                       "topk_idx[1][0] = 5 is not an expert in [0, 4)");
    expect_usage_error(dsv3_moe_plan(PLAN(&reference), order, offsets, idx, N, K, E),
                       "topk_idx[1][0] = 5");
    const int32_t bad_order[4] = {0, 1, 4, 2};
    expect_usage_error(dsv3_moe_gather(&cpu, F32, xs, x, bad_order, 4, 2, 2), "order[2] = 4");
    expect_usage_error(dsv3_moe_gather(&cpu, F32, xs, x, bad_order, 3, 2, 2), "M = 3 rows");
    const int32_t repeated[4] = {0, 1, 1, 2};
    expect_usage_error(
        dsv3_moe_combine_forward(COMBINE(&cpu, FORWARD), F32, x, xs, w, repeated, N, K, D),
        "permutation");
    expect_usage_error(
        dsv3_moe_combine_forward(COMBINE(&reference, FORWARD), F32, x, xs, w, repeated, N, K, D),
        "permutation");
    expect_usage_error(
        dsv3_moe_gather_backward(GATHER_BACKWARD(&cpu), F32, x, xs, repeated, M, K, D),
        "permutation");
    expect_usage_error(
        dsv3_moe_combine_backward(COMBINE(&cpu, BACKWARD), F32, xs, w, x, xs, w, repeated, N, K, D),
        "permutation");
    K = 0;
    expect_usage_error(
        dsv3_moe_combine_forward(COMBINE(&cpu, FORWARD), F32, x, xs, w, order, N, K, D), "K = 0");
}

// ---- experts ----

typedef struct {
    int64_t E, D, F;
    const int64_t *rows; // (E) rows of each expert
} ExpertsCase;

static void check_experts_case(const ExpertsCase *c) {
    const int64_t E = c->E, D = c->D, F = c->F;
    int64_t *offsets = zeros(E + 1, sizeof(int64_t));
    for (int64_t e = 0; e < E; e++)
        offsets[e + 1] = offsets[e] + c->rows[e];
    const int64_t M = offsets[E];
    const float scale = 1.0f / sqrtf((float)D);
    float *xs = random_floats(M * D, -1.0f, 1.0f);
    float *w1 = random_floats(E * F * D, -scale, scale),
          *w3 = random_floats(E * F * D, -scale, scale);
    float *w2 = random_floats(E * D * F, -scale, scale);
    float *dys = random_floats(M * D, -1.0f, 1.0f);
    float *g0 = random_floats(E * F * D, -1.0f, 1.0f); // what the weight gradients add onto
    float *ys_ref = zeros(M * D, sizeof(float)), *h1_ref = zeros(M * F, sizeof(float));
    float *h3_ref = zeros(M * F, sizeof(float)), *dxs_ref = zeros(M * D, sizeof(float));
    float *dw1_ref = copy_floats(g0, E * F * D), *dw2_ref = copy_floats(g0, E * F * D);
    float *dw3_ref = copy_floats(g0, E * F * D);
    assert_int_equal(dsv3_experts_forward(EXPERTS(&reference, FORWARD), F32, ys_ref, h1_ref, h3_ref,
                                          xs, w1, w2, w3, offsets, E, D, F),
                     DSV3_OK);
    assert_int_equal(dsv3_experts_backward(EXPERTS(&reference, BACKWARD), F32, dxs_ref, dw1_ref,
                                           dw2_ref, dw3_ref, dys, xs, h1_ref, h3_ref, w1, w2, w3,
                                           offsets, E, D, F),
                     DSV3_OK);
    for (int t = 0; t < THREAD_COUNT_CASES; t++) {
        omp_set_num_threads(THREAD_COUNTS[t]);
        float *ys = zeros(M * D, sizeof(float)), *h1 = zeros(M * F, sizeof(float));
        float *h3 = zeros(M * F, sizeof(float)), *dxs = zeros(M * D, sizeof(float));
        float *dw1 = copy_floats(g0, E * F * D), *dw2 = copy_floats(g0, E * F * D);
        float *dw3 = copy_floats(g0, E * F * D);
        assert_int_equal(dsv3_experts_forward(EXPERTS(&cpu, FORWARD), F32, ys, h1, h3, xs, w1, w2,
                                              w3, offsets, E, D, F),
                         DSV3_OK);
        assert_close(ys, ys_ref, M * D, "experts ys");
        assert_close(h1, h1_ref, M * F, "experts h1");
        assert_close(h3, h3_ref, M * F, "experts h3");
        assert_int_equal(dsv3_experts_backward(EXPERTS(&cpu, BACKWARD), F32, dxs, dw1, dw2, dw3,
                                               dys, xs, h1, h3, w1, w2, w3, offsets, E, D, F),
                         DSV3_OK);
        assert_close(dxs, dxs_ref, M * D, "experts dxs");
        // Compare the increments, so that the values added onto do not hide an error.
        for (int64_t i = 0; i < E * F * D; i++) {
            dw1[i] -= g0[i], dw2[i] -= g0[i], dw3[i] -= g0[i];
        }
        float *inc1 = copy_floats(dw1_ref, E * F * D), *inc2 = copy_floats(dw2_ref, E * F * D);
        float *inc3 = copy_floats(dw3_ref, E * F * D);
        for (int64_t i = 0; i < E * F * D; i++) {
            inc1[i] -= g0[i], inc2[i] -= g0[i], inc3[i] -= g0[i];
        }
        assert_close(dw1, inc1, E * F * D, "experts dw1");
        assert_close(dw2, inc2, E * F * D, "experts dw2");
        assert_close(dw3, inc3, E * F * D, "experts dw3");
        free(ys), free(h1), free(h3), free(dxs), free(dw1), free(dw2), free(dw3), free(inc1),
            free(inc2), free(inc3);
    }
    free(offsets), free(xs), free(w1), free(w2), free(w3), free(dys), free(g0), free(ys_ref),
        free(h1_ref), free(h3_ref), free(dxs_ref), free(dw1_ref), free(dw2_ref), free(dw3_ref);
}

static void test_experts_match_reference(void **state) {
    (void)state;
    rng_state = 3;
    static const int64_t one[] = {1};
    static const int64_t uneven[] = {5, 0, 13, 1};       // an empty expert
    static const int64_t two_busy[] = {0, 40, 0, 0, 37}; // fewer busy experts than 2 × threads
    static const int64_t many[] = {9, 3, 0, 17, 25, 1, 0, 8, 12, 4, 30, 2};
    static const int64_t none[] = {0, 0, 0};
    static const ExpertsCase cases[] = {
        {1, 1, 1, one},        {1, 7, 5, one},     {4, 17, 23, uneven},
        {5, 32, 48, two_busy}, {12, 24, 40, many}, {3, 8, 8, none},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_experts_case(&cases[i]);
}

static void test_experts_argument_checks(void **state) {
    (void)state;
    float buf[64] = {0};
    const int64_t not_zero[3] = {1, 2, 3}, decreasing[3] = {0, 3, 2};
    // The offsets are wrong: the workspace is sized for the rows they would give.
    enum { E = 2, D = 2, F = 2, ROWS = 3 };
#define BAD(ctx, DIRECTION) SIZED((ctx), EXPERTS_##DIRECTION, .E = E, .D = D, .F = F, .M = ROWS)
    expect_usage_error(dsv3_experts_forward(BAD(&cpu, FORWARD), F32, buf, buf, buf, buf, buf, buf,
                                            buf, not_zero, E, D, F),
                       "offsets[0] = 1");
    expect_usage_error(dsv3_experts_forward(BAD(&cpu, FORWARD), F32, buf, buf, buf, buf, buf, buf,
                                            buf, decreasing, E, D, F),
                       "offsets[2] = 2 < offsets[1] = 3");
    expect_usage_error(dsv3_experts_backward(BAD(&reference, BACKWARD), F32, buf, buf, buf, buf,
                                             buf, buf, buf, buf, buf, buf, buf, decreasing, E, D,
                                             F),
                       "non-decreasing");
    const int64_t fine[3] = {0, 1, 2};
    expect_usage_error(dsv3_experts_backward(BAD(&cpu, BACKWARD), F32, buf, buf, buf, buf, buf, buf,
                                             buf, buf, buf, buf, buf, fine, E, 0, F),
                       "D = 0");
#undef BAD
}

// The ops allocate nothing: after the workspaces are freed, every counted byte is returned.
static void test_no_leaks(void **state) {
    (void)state;
    kernels_test_free_workspace(&cpu);
    kernels_test_free_workspace(&reference);
    const size_t before = dsv3_alloc_current_bytes();
    rng_state = 4;
    static const int64_t rows[] = {3, 0, 4};
    const ExpertsCase e = {3, 5, 6, rows};
    check_experts_case(&e);
    const PermuteCase p = {50, 2, 5, 3};
    check_permute_case(&p);
    const RouterCase r = {40, 16, 4, 4, 2, 1, 1, 2.5f, 0.3f};
    check_router_case(&r);
    test_permute_argument_checks(state);
    kernels_test_free_workspace(&cpu);
    kernels_test_free_workspace(&reference);
    assert_int_equal(dsv3_alloc_current_bytes(), before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_router_matches_reference),
        cmocka_unit_test(test_router_ties_go_to_lower_index),
        cmocka_unit_test(test_router_bias_and_groups),
        cmocka_unit_test(test_router_argument_checks),
        cmocka_unit_test(test_permute_matches_reference),
        cmocka_unit_test(test_plan_by_hand),
        cmocka_unit_test(test_permute_argument_checks),
        cmocka_unit_test(test_experts_match_reference),
        cmocka_unit_test(test_experts_argument_checks),
        cmocka_unit_test(test_no_leaks),
    };
    return cmocka_run_group_tests(tests, contexts_create, contexts_destroy);
}
