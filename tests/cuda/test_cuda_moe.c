// cuda_moe: the CUDA MoE routing ops — router (forward, backward), load balancing
// (counts_accumulate, expert_bias_update) and token permutation (moe_plan, moe_gather and its
// backward, moe_combine forward and backward) — against the reference CPU backend, with the same
// random inputs.
//
// Shapes: one token, odd sizes, E not a multiple of 32, K beyond a warp, groups beyond a warp,
// large E, more tokens (rows) than one grid covers, empty inputs. Tolerances (relative,
// ‖cuda − ref‖ / ‖ref‖):
//   fp32 outputs: TOLERANCE = 1e-5 (the CUDA ops compute in the reference's precision, double
//     where it uses double; only the order of some double sums differs).
//   Integer outputs (the choice, counts, the plan) and copies (the gather, the bias update,
//     computed with the reference's operations in its order): exact.
//   bf16 variants (the ops taking a dtype): inputs rounded to bf16 on the host first, so both
//     backends see the same values; outputs stored as bf16 carry one rounding each (at most
//     2^-9 relative), so BF16_TOLERANCE = 1e-2; fp32 outputs computed from bf16 inputs (scores,
//     weights, dweights) keep TOLERANCE.
// Accumulating outputs (gather backward, combine forward) start from random values; their
// increments are compared in fp32, their totals in bf16 (see expect_accumulated). Also: the data
// faults (a bad expert index or order entry gives DSV3_ERR_USAGE naming the op from
// dsv3_synchronize), the argument checks, the workspace sizes.
//
// Legend: N tokens, E experts, K experts per token, G expert groups, L groups a token may use,
// D model width, M = N × K routed rows.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/cuda/cuda_test.h"

static const double TOLERANCE = 1e-5;
static const double BF16_TOLERANCE = 1e-2;

static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32, BF16 = DSV3_TENSOR_BF16;

// A dtype no op accepts.
enum { BAD_DTYPE = 7 };

// Tokens beyond one grid of the router (CUDA_MAX_BLOCKS blocks of 8 tokens).
enum { ROUTER_BEYOND_ONE_GRID = 4096 * 8 + 232 };

// Elements beyond one grid of the element-wise kernels (CUDA_MAX_BLOCKS × CUDA_THREADS = 2^20).
enum { BEYOND_ONE_GRID = (1 << 20) + 3 };

// The reference plan loops over E × M: above this, the plan is checked by its definition only.
static const double REFERENCE_PLAN_BUDGET = 2e8;

// ---- helpers ----

// A device copy of x (n) as `dtype` (x already holds bf16 values when dtype is bf16).
static void *upload_as(const float *x, int64_t n, Dsv3TensorDtype dtype) {
    return dtype == BF16 ? cuda_test_upload_bf16(x, n)
                         : cuda_test_upload(x, (size_t)n * sizeof(float));
}

// The device tensor (n) of `dtype` as fp32 host values.
static float *download_as(const void *device, int64_t n, Dsv3TensorDtype dtype) {
    return dtype == BF16 ? cuda_test_download_bf16(device, n)
                         : cuda_test_download_floats(device, n);
}

// Device memory for n elements of `dtype`, zeroed.
static void *device_as(int64_t n, Dsv3TensorDtype dtype) {
    return cuda_test_device((size_t)n * (dtype == BF16 ? sizeof(uint16_t) : sizeof(float)));
}

static int32_t *download_ints(const int32_t *device, int64_t n) {
    int32_t *host = test_buffer(n, sizeof(int32_t));
    cuda_test_download(host, device, (size_t)n * sizeof(int32_t));
    return host;
}

static int64_t *download_int64s(const int64_t *device, int64_t n) {
    int64_t *host = test_buffer(n, sizeof(int64_t));
    cuda_test_download(host, device, (size_t)n * sizeof(int64_t));
    return host;
}

static void expect_equal_int64s(const int64_t *got, const int64_t *want, int64_t n,
                                const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("%s: element %lld is %lld, expected %lld", what, (long long)i,
                     (long long)got[i], (long long)want[i]);
}

// x (n) − base (n), in a new buffer: the increment of an accumulating op.
static float *increment(const float *x, const float *base, int64_t n) {
    float *d = test_floats(n);
    for (int64_t i = 0; i < n; i++)
        d[i] = x[i] - base[i];
    return d;
}

// An accumulating op's result got (n) against the reference's want (n), both added onto base
// (n). fp32: the increments are compared, so that base cannot hide an error in them. bf16: the
// totals, since the result's one rounding is relative to the total, which a small increment
// would magnify (a missing base still shows as an error of the order of base itself).
static void expect_accumulated(const float *got, const float *want, const float *base, int64_t n,
                               Dsv3TensorDtype dtype, const char *what) {
    if (dtype == BF16)
        cuda_test_expect_close(got, want, n, BF16_TOLERANCE, what);
    else
        cuda_test_expect_close(increment(got, base, n), increment(want, base, n), n, TOLERANCE,
                               what);
}

static void expect_usage_error(Dsv3Err got, const char *fragment) {
    assert_int_equal(got, DSV3_ERR_USAGE);
    if (!strstr(dsv3_error_message(), fragment))
        fail_msg("error message '%s' does not mention '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

// The op ran; the data fault it met is reported by the next synchronisation.
static void expect_fault(Dsv3Err launched, const char *fragment) {
    cuda_test_ok(launched);
    expect_usage_error(dsv3_synchronize(&cuda_ctx), fragment);
}

// K distinct experts in [0, E) per token (N, K), in random order.
static int32_t *random_choice(uint64_t *rng, int64_t N, int64_t K, int64_t E) {
    int32_t *idx = test_buffer(N * K, sizeof(int32_t));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            int taken;
            do { // rejection: K is small next to E, or E is small
                idx[n * K + k] = (int32_t)(kernels_test_rng_next(rng) % (uint64_t)E);
                taken = 0;
                for (int64_t j = 0; j < k; j++)
                    taken |= idx[n * K + j] == idx[n * K + k];
            } while (taken);
        }
    return idx;
}

// ---- router ----

typedef struct {
    int64_t N, E, K, G, L;
    int sigmoid, route_norm;
    float route_scale;
    float bias_scale; // 0: no expert_bias; else bias uniform in ±bias_scale
} RouterCase;

#define ROUTER_CUDA(DIRECTION) CUDA_SIZED(ROUTER_##DIRECTION, .N = N, .E = E, .K = K)
#define ROUTER_REF(DIRECTION) REF_SIZED(ROUTER_##DIRECTION, .N = N, .E = E, .K = K)

static void check_router_case(const RouterCase *c, Dsv3TensorDtype dtype, uint64_t seed) {
    const Dsv3RouterArgs args = {c->E, c->K, c->G, c->L, c->sigmoid, c->route_norm, c->route_scale};
    const int64_t N = c->N, E = c->E, K = c->K;
    uint64_t rng = seed;
    float *logits = cuda_test_random_floats(&rng, N * E, 3.0f); // (N, E)
    if (dtype == BF16) cuda_test_round_bf16(logits, N * E);
    float *bias = c->bias_scale > 0 ? cuda_test_random_floats(&rng, E, c->bias_scale) : NULL; // (E)
    float *dweights = cuda_test_random_floats(&rng, N * K, 1.0f); // (N, K)

    float *s_ref = test_floats(N * E), *w_ref = test_floats(N * K), *dl_ref = test_floats(N * E);
    int32_t *i_ref = test_buffer(N * K, sizeof(int32_t));
    int64_t *c_ref = test_buffer(E, sizeof(int64_t));
    cuda_test_ok(dsv3_router_forward(ROUTER_REF(FORWARD), F32, s_ref, i_ref, w_ref, c_ref, logits,
                                     bias, N, &args));
    cuda_test_ok(
        dsv3_router_backward(ROUTER_REF(BACKWARD), F32, dl_ref, dweights, s_ref, i_ref, N, &args));

    void *d_logits = upload_as(logits, N * E, dtype);
    float *d_bias = bias ? cuda_test_upload(bias, (size_t)E * sizeof(float)) : NULL;
    float *d_s = cuda_test_device((size_t)(N * E) * sizeof(float));
    float *d_w = cuda_test_device((size_t)(N * K) * sizeof(float));
    int32_t *d_i = cuda_test_device((size_t)(N * K) * sizeof(int32_t));
    int64_t *garbage = test_buffer(E, sizeof(int64_t));
    for (int64_t e = 0; e < E; e++)
        garbage[e] = 12345; // counts are written, not added
    int64_t *d_c = cuda_test_upload(garbage, (size_t)E * sizeof(int64_t));
    cuda_test_ok(dsv3_router_forward(ROUTER_CUDA(FORWARD), dtype, d_s, d_i, d_w, d_c, d_logits,
                                     d_bias, N, &args));
    cuda_test_expect_close(cuda_test_download_floats(d_s, N * E), s_ref, N * E, TOLERANCE,
                           "router scores");
    cuda_test_expect_equal_ints(download_ints(d_i, N * K), i_ref, N * K, "router topk_idx");
    expect_equal_int64s(download_int64s(d_c, E), c_ref, E, "router counts");
    cuda_test_expect_close(cuda_test_download_floats(d_w, N * K), w_ref, N * K, TOLERANCE,
                           "router weights");

    float *d_dw = cuda_test_upload(dweights, (size_t)(N * K) * sizeof(float));
    void *d_dl = device_as(N * E, dtype);
    cuda_test_ok(
        dsv3_router_backward(ROUTER_CUDA(BACKWARD), dtype, d_dl, d_dw, d_s, d_i, N, &args));
    cuda_test_expect_close(download_as(d_dl, N * E, dtype), dl_ref, N * E,
                           dtype == BF16 ? BF16_TOLERANCE : TOLERANCE, "router dlogits");
}

static void test_router_matches_reference(void **state) {
    static const RouterCase cases[] = {
        // N   E  K  G  L  sigmoid norm scale bias
        {37, 8, 3, 0, 0, 0, 0, 1.0f, 0.0f},      // debugmodel: softmax, no norm
        {1, 8, 3, 0, 0, 0, 0, 1.0f, 0.0f},       // one token
        {50, 8, 1, 0, 0, 1, 0, 1.0f, 0.0f},      // K = 1, sigmoid
        {64, 16, 4, 4, 2, 1, 1, 2.5f, 0.3f},     // group-limited, sigmoid, norm, bias
        {65, 16, 4, 4, 2, 0, 0, 16.0f, 0.0f},    // group-limited, softmax
        {300, 64, 6, 0, 0, 0, 0, 1.0f, 0.05f},   // 16B-like with bias
        {129, 64, 8, 8, 4, 1, 1, 2.5f, 0.5f},    // 671B-like routing
        {33, 7, 7, 0, 0, 0, 1, 0.5f, 1.0f},      // K = E, odd E
        {20, 12, 2, 6, 1, 0, 1, 1.0f, 0.2f},     // one group of 2 experts kept
        {19, 64, 40, 0, 0, 0, 1, 1.0f, 0.0f},    // K beyond a warp's lanes
        {517, 300, 5, 0, 0, 0, 1, 1.0f, 0.1f},   // E not a multiple of 32
        {33, 2048, 8, 64, 8, 1, 1, 1.0f, 0.01f}, // large E, 64 groups
        {ROUTER_BEYOND_ONE_GRID, 256, 8, 8, 4, 1, 1, 2.5f, 1e-3f}, // DeepSeek-V3's routing
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_router_case(&cases[i], F32, 10 + i);
        cuda_test_teardown_case(state); // this shape's buffers
        check_router_case(&cases[i], BF16, 10 + i);
        cuda_test_teardown_case(state);
    }
}

// One token of hand-made logits: its topk_idx on the device.
static int32_t *route_one(const float *logits, const float *bias, const Dsv3RouterArgs *args) {
    const int64_t N = 1, E = args->num_experts, K = args->top_k;
    float *d_l = cuda_test_upload(logits, (size_t)E * sizeof(float));
    float *d_b = bias ? cuda_test_upload(bias, (size_t)E * sizeof(float)) : NULL;
    float *d_s = cuda_test_device((size_t)E * sizeof(float));
    float *d_w = cuda_test_device((size_t)K * sizeof(float));
    int32_t *d_i = cuda_test_device((size_t)K * sizeof(int32_t));
    int64_t *d_c = cuda_test_device((size_t)E * sizeof(int64_t));
    cuda_test_ok(
        dsv3_router_forward(ROUTER_CUDA(FORWARD), F32, d_s, d_i, d_w, d_c, d_l, d_b, N, args));
    return download_ints(d_i, K);
}

// Equal scores: the choice goes to the lower expert index, as in the reference.
static void test_router_ties_go_to_lower_index(void **state) {
    (void)state;
    const Dsv3RouterArgs args = {6, 3, 0, 0, 0, 0, 1.0f};
    const float logits[6] = {0.5f, 1.0f, 0.5f, 1.0f, 0.5f, 1.0f};
    const int32_t want[3] = {1, 3, 5};
    cuda_test_expect_equal_ints(route_one(logits, NULL, &args), want, 3, "ties");
    const float tied[6] = {0, 0, 0, 0, 0, 0};
    const int32_t want_tied[3] = {0, 1, 2};
    cuda_test_expect_equal_ints(route_one(tied, NULL, &args), want_tied, 3, "all tied");
    // Tied groups too: of four equal groups of two, the first two are kept.
    const Dsv3RouterArgs grouped = {8, 3, 4, 2, 0, 0, 1.0f};
    const float flat[8] = {0};
    cuda_test_expect_equal_ints(route_one(flat, NULL, &grouped), want_tied, 3, "tied groups");
}

// The bias moves the choice but not the weights; groups fence the choice in.
static void test_router_bias_and_groups(void **state) {
    (void)state;
    // Sigmoid scores of these logits rise with the index; a bias on expert 0 makes it chosen.
    const float logits[8] = {-2.0f, -1.5f, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
    const float bias[8] = {5.0f, 0, 0, 0, 0, 0, 0, 0};
    Dsv3RouterArgs args = {8, 2, 0, 0, 1, 0, 1.0f};
    const int32_t biased[2] = {0, 7};
    cuda_test_expect_equal_ints(route_one(logits, bias, &args), biased, 2, "bias");
    // Four groups of two; keep one: the last, so the second choice is expert 6, not expert 0.
    args.num_groups = 4, args.num_limited_groups = 1;
    const int32_t fenced[2] = {7, 6};
    cuda_test_expect_equal_ints(route_one(logits, NULL, &args), fenced, 2, "groups");
    // With the bias, group 0 scores highest (5 + σ(−2) + σ(−1.5)): experts 0 and 1.
    const int32_t first_group[2] = {0, 1};
    cuda_test_expect_equal_ints(route_one(logits, bias, &args), first_group, 2, "biased group");
}

// No tokens: counts are still written (zeros).
static void test_router_no_tokens(void **state) {
    (void)state;
    const Dsv3RouterArgs args = {16, 4, 0, 0, 0, 0, 1.0f};
    const int64_t N = 0, E = 16, K = 4;
    int64_t garbage[16];
    for (int e = 0; e < 16; e++)
        garbage[e] = -1;
    int64_t *d_c = cuda_test_upload(garbage, sizeof garbage);
    cuda_test_ok(dsv3_router_forward(ROUTER_CUDA(FORWARD), F32, NULL, NULL, NULL, d_c, NULL, NULL,
                                     N, &args));
    const int64_t zero[16] = {0};
    expect_equal_int64s(download_int64s(d_c, E), zero, E, "counts without tokens");
    cuda_test_ok(
        dsv3_router_backward(ROUTER_CUDA(BACKWARD), F32, NULL, NULL, NULL, NULL, N, &args));
}

static void test_router_argument_checks(void **state) {
    (void)state;
    enum { CAP = 64 };
    float *s = cuda_test_device(CAP * sizeof(float)), *w = cuda_test_device(CAP * sizeof(float));
    float *l = cuda_test_device(CAP * sizeof(float)), *dl = cuda_test_device(CAP * sizeof(float));
    int32_t *idx = cuda_test_device(CAP * sizeof(int32_t));
    int64_t *counts = cuda_test_device(CAP * sizeof(int64_t));
    Dsv3RouterArgs args = {8, 9, 0, 0, 0, 0, 1.0f};
    expect_usage_error(dsv3_router_forward(&cuda_ctx, F32, s, idx, w, counts, l, NULL, 1, &args),
                       "top_k = 9");
    args = (Dsv3RouterArgs){12, 2, 5, 1, 0, 0, 1.0f};
    expect_usage_error(dsv3_router_forward(&cuda_ctx, F32, s, idx, w, counts, l, NULL, 1, &args),
                       "num_groups = 5 must divide num_experts = 12");
    args = (Dsv3RouterArgs){16, 2, 4, 5, 0, 0, 1.0f};
    expect_usage_error(dsv3_router_forward(&cuda_ctx, F32, s, idx, w, counts, l, NULL, 1, &args),
                       "num_limited_groups = 5");
    args = (Dsv3RouterArgs){16, 9, 4, 2, 0, 0, 1.0f};
    expect_usage_error(dsv3_router_forward(&cuda_ctx, F32, s, idx, w, counts, l, NULL, 1, &args),
                       "exceeds the 8 experts");
    args = (Dsv3RouterArgs){16, 4, 0, 0, 2, 0, 1.0f};
    expect_usage_error(dsv3_router_forward(&cuda_ctx, F32, s, idx, w, counts, l, NULL, 1, &args),
                       "sigmoid = 2");
    args = (Dsv3RouterArgs){16, 4, 0, 0, 0, 0, NAN};
    expect_usage_error(dsv3_router_backward(&cuda_ctx, F32, dl, w, s, idx, 1, &args),
                       "route_scale");
    args = (Dsv3RouterArgs){16, 4, 0, 0, 0, 0, 1.0f};
    expect_usage_error(dsv3_router_forward(&cuda_ctx, F32, s, idx, w, counts, l, NULL, -1, &args),
                       "N = -1");
    expect_usage_error(dsv3_router_forward(&cuda_ctx, F32, s, idx, w, NULL, l, NULL, 1, &args),
                       "counts is NULL");
    expect_usage_error(dsv3_router_forward(&cuda_ctx, F32, s, NULL, w, counts, l, NULL, 1, &args),
                       "must not be NULL");
    expect_usage_error(dsv3_router_backward(&cuda_ctx, F32, dl, w, NULL, idx, 1, &args),
                       "must not be NULL");
    expect_usage_error(dsv3_router_forward(&cuda_ctx, F32, s, idx, w, counts, l, NULL, 1, NULL),
                       "args is NULL");
    expect_usage_error(dsv3_router_forward(&cuda_ctx, (Dsv3TensorDtype)BAD_DTYPE, s, idx, w, counts,
                                           l, NULL, 1, &args),
                       "dtype 7");
    expect_usage_error(
        dsv3_router_backward(&cuda_ctx, (Dsv3TensorDtype)BAD_DTYPE, dl, w, s, idx, 1, &args),
        "dtype 7");
    // More experts than a block's shared memory holds for one token.
    args = (Dsv3RouterArgs){1 << 20, 4, 0, 0, 0, 0, 1.0f};
    expect_usage_error(dsv3_router_forward(&cuda_ctx, F32, s, idx, w, counts, l, NULL, 1, &args),
                       "shared memory");
}

// An expert index outside [0, E) in the backward's topk_idx is reported by dsv3_synchronize.
static void test_router_backward_fault(void **state) {
    (void)state;
    const Dsv3RouterArgs args = {16, 4, 0, 0, 0, 0, 1.0f};
    const int64_t N = 1, E = 16, K = 4;
    const int32_t idx[4] = {0, 1, 16, 3};
    float *s = cuda_test_device(E * sizeof(float)), *dl = cuda_test_device(E * sizeof(float));
    float *dw = cuda_test_device(K * sizeof(float));
    int32_t *d_i = cuda_test_upload(idx, sizeof idx);
    expect_fault(dsv3_router_backward(ROUTER_CUDA(BACKWARD), F32, dl, dw, s, d_i, N, &args),
                 "router_backward: element 2 of its input holds 16");
    cuda_test_ok(dsv3_synchronize(&cuda_ctx)); // reported once
}

// ---- load balancing ----

static void test_counts_accumulate_matches_reference(void **state) {
    static const int64_t SIZES[] = {1, 300, BEYOND_ONE_GRID};
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++) {
        const int64_t n = SIZES[s];
        uint64_t rng = 400 + s;
        int64_t *total = test_buffer(n, sizeof(int64_t)), *counts = test_buffer(n, sizeof(int64_t));
        for (int64_t i = 0; i < n; i++) {
            total[i] = (int64_t)(kernels_test_rng_next(&rng) >> 2) - ((int64_t)1 << 61);
            counts[i] = (int64_t)(kernels_test_rng_next(&rng) % 100000);
        }
        int64_t *d_total = cuda_test_upload(total, (size_t)n * sizeof(int64_t));
        int64_t *d_counts = cuda_test_upload(counts, (size_t)n * sizeof(int64_t));
        cuda_test_ok(dsv3_counts_accumulate(&ref_ctx, total, counts, n));
        cuda_test_ok(dsv3_counts_accumulate(&cuda_ctx, d_total, d_counts, n));
        expect_equal_int64s(download_int64s(d_total, n), total, n, "counts_accumulate");
        cuda_test_teardown_case(state);
    }
    cuda_test_ok(dsv3_counts_accumulate(&cuda_ctx, NULL, NULL, 0));
}

static void test_expert_bias_update_matches_reference(void **state) {
    static const int64_t SIZES[] = {1, 8, 64, 256, 300, 1000};
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++) {
        const int64_t E = SIZES[s];
        uint64_t rng = 500 + s;
        float *bias = cuda_test_random_floats(&rng, E, 0.1f);
        int64_t *counts = test_buffer(E, sizeof(int64_t));
        for (int64_t e = 0; e < E; e++) // E = 8: every count the mean, so δ = 0 everywhere
            counts[e] = E == 8 ? 42 : (int64_t)(kernels_test_rng_next(&rng) % 100);
        float *d_bias = cuda_test_upload(bias, (size_t)E * sizeof(float));
        int64_t *d_counts = cuda_test_upload(counts, (size_t)E * sizeof(int64_t));
        cuda_test_ok(dsv3_expert_bias_update(&ref_ctx, bias, counts, E, 1e-3));
        cuda_test_ok(dsv3_expert_bias_update(&cuda_ctx, d_bias, d_counts, E, 1e-3));
        // The reference's operations in its order: the same bits.
        assert_memory_equal(cuda_test_download_floats(d_bias, E), bias, (size_t)E * sizeof(float));
        cuda_test_teardown_case(state);
    }
}

static void test_load_balance_argument_checks(void **state) {
    (void)state;
    float *bias = cuda_test_device(4 * sizeof(float));
    int64_t *counts = cuda_test_device(4 * sizeof(int64_t));
    expect_usage_error(dsv3_counts_accumulate(&cuda_ctx, counts, counts, -1), "n = -1");
    expect_usage_error(dsv3_counts_accumulate(&cuda_ctx, NULL, counts, 4), "must not be NULL");
    expect_usage_error(dsv3_expert_bias_update(&cuda_ctx, bias, counts, 0, 1e-3), "E = 0");
    expect_usage_error(dsv3_expert_bias_update(&cuda_ctx, NULL, counts, 4, 1e-3),
                       "must not be NULL");
    expect_usage_error(dsv3_expert_bias_update(&cuda_ctx, bias, counts, 4, NAN), "coeff");
}

// ---- permutation ----

typedef struct {
    int64_t N, K, E, D;
} PermuteCase;

#define PLAN_CUDA() CUDA_SIZED(MOE_PLAN, .N = N, .K = K, .E = E)
#define PLAN_REF() REF_SIZED(MOE_PLAN, .N = N, .K = K, .E = E)
#define GATHER_BACKWARD_CUDA() CUDA_SIZED(MOE_GATHER_BACKWARD, .M = M, .K = K, .D = D)
#define GATHER_BACKWARD_REF() REF_SIZED(MOE_GATHER_BACKWARD, .M = M, .K = K, .D = D)
#define COMBINE_CUDA(DIRECTION) CUDA_SIZED(MOE_COMBINE_##DIRECTION, .N = N, .K = K, .D = D)
#define COMBINE_REF(DIRECTION) REF_SIZED(MOE_COMBINE_##DIRECTION, .N = N, .K = K, .D = D)

// The plan is the stable sort of the assignments by expert: offsets (E + 1) from 0 to M, the
// rows of expert e holding its assignments in increasing order, every assignment once.
static void expect_stable_sort(const int32_t *order, const int64_t *offsets, const int32_t *idx,
                               int64_t M, int64_t E) {
    assert_int_equal(offsets[0], 0);
    assert_int_equal(offsets[E], M);
    unsigned char *seen = test_buffer(M, 1);
    for (int64_t e = 0; e < E; e++) {
        assert_true(offsets[e] <= offsets[e + 1]);
        for (int64_t j = offsets[e]; j < offsets[e + 1]; j++) {
            assert_true(order[j] >= 0 && order[j] < M);
            assert_int_equal(idx[order[j]], e);
            if (j > offsets[e]) assert_true(order[j] > order[j - 1]); // stable
            assert_false(seen[order[j]]);
            seen[order[j]] = 1;
        }
    }
}

// The plan of topk_idx on the device, checked (against the reference when affordable);
// *d_order gets the device plan's order, the host copy is returned.
static int32_t *check_plan(int32_t **d_order, const int32_t *idx, int64_t N, int64_t K, int64_t E) {
    const int64_t M = N * K;
    int32_t *d_idx = cuda_test_upload(idx, (size_t)M * sizeof(int32_t));
    *d_order = cuda_test_device((size_t)M * sizeof(int32_t));
    int64_t *d_offsets = cuda_test_device((size_t)(E + 1) * sizeof(int64_t));
    cuda_test_ok(dsv3_moe_plan(PLAN_CUDA(), *d_order, d_offsets, d_idx, N, K, E));
    int32_t *order = download_ints(*d_order, M);
    int64_t *offsets = download_int64s(d_offsets, E + 1);
    expect_stable_sort(order, offsets, idx, M, E);
    if ((double)E * (double)M <= REFERENCE_PLAN_BUDGET) {
        int32_t *o_ref = test_buffer(M, sizeof(int32_t));
        int64_t *off_ref = test_buffer(E + 1, sizeof(int64_t));
        cuda_test_ok(dsv3_moe_plan(PLAN_REF(), o_ref, off_ref, idx, N, K, E));
        cuda_test_expect_equal_ints(order, o_ref, M, "plan order");
        expect_equal_int64s(offsets, off_ref, E + 1, "plan offsets");
    }
    // Deterministic: the same plan again.
    cuda_test_ok(dsv3_moe_plan(PLAN_CUDA(), *d_order, d_offsets, d_idx, N, K, E));
    cuda_test_expect_equal_ints(download_ints(*d_order, M), order, M, "plan order (again)");
    return order;
}

static void check_permute_case(const PermuteCase *c, Dsv3TensorDtype dtype, uint64_t seed) {
    const int64_t N = c->N, K = c->K, E = c->E, D = c->D, M = N * K;
    const double tolerance = dtype == BF16 ? BF16_TOLERANCE : TOLERANCE; // outputs of dtype
    uint64_t rng = seed;
    int32_t *idx = random_choice(&rng, N, K, E); // (N, K)
    float *x = cuda_test_random_floats(&rng, N * D, 1.0f),
          *ys = cuda_test_random_floats(&rng, M * D, 1.0f);
    float *dxs = cuda_test_random_floats(&rng, M * D, 1.0f),
          *dout = cuda_test_random_floats(&rng, N * D, 1.0f);
    float *base = cuda_test_random_floats(&rng, N * D, 1.0f); // what the accumulating ops add onto
    float *weights = cuda_test_random_floats(&rng, N * K, 1.0f);
    if (dtype == BF16) {
        cuda_test_round_bf16(x, N * D), cuda_test_round_bf16(ys, M * D);
        cuda_test_round_bf16(dxs, M * D), cuda_test_round_bf16(dout, N * D);
        cuda_test_round_bf16(base, N * D);
    }
    int32_t *d_order = NULL;
    int32_t *order = check_plan(&d_order, idx, N, K, E); // (M), the reference's too

    // Gather: a copy, exact in either dtype.
    float *xs_ref = test_floats(M * D);
    cuda_test_ok(dsv3_moe_gather(&ref_ctx, F32, xs_ref, x, order, M, K, D));
    void *d_xs = device_as(M * D, dtype);
    cuda_test_ok(
        dsv3_moe_gather(&cuda_ctx, dtype, d_xs, upload_as(x, N * D, dtype), d_order, M, K, D));
    if (M > 0)
        assert_memory_equal(download_as(d_xs, M * D, dtype), xs_ref,
                            (size_t)(M * D) * sizeof(float));

    // Gather backward: added onto dx.
    float *dx_ref = cuda_test_copy_floats(base, N * D);
    cuda_test_ok(dsv3_moe_gather_backward(GATHER_BACKWARD_REF(), F32, dx_ref, dxs, order, M, K, D));
    void *d_dx = upload_as(base, N * D, dtype);
    cuda_test_ok(dsv3_moe_gather_backward(GATHER_BACKWARD_CUDA(), dtype, d_dx,
                                          upload_as(dxs, M * D, dtype), d_order, M, K, D));
    expect_accumulated(download_as(d_dx, N * D, dtype), dx_ref, base, N * D, dtype,
                       "gather backward dx");

    // Combine forward: added onto out.
    float *out_ref = cuda_test_copy_floats(base, N * D);
    cuda_test_ok(
        dsv3_moe_combine_forward(COMBINE_REF(FORWARD), F32, out_ref, ys, weights, order, N, K, D));
    void *d_out = upload_as(base, N * D, dtype), *d_ys = upload_as(ys, M * D, dtype);
    float *d_w = cuda_test_upload(weights, (size_t)(N * K) * sizeof(float));
    cuda_test_ok(
        dsv3_moe_combine_forward(COMBINE_CUDA(FORWARD), dtype, d_out, d_ys, d_w, d_order, N, K, D));
    expect_accumulated(download_as(d_out, N * D, dtype), out_ref, base, N * D, dtype,
                       "combine out");

    // Combine backward: dys and dweights written.
    float *dys_ref = test_floats(M * D), *dw_ref = test_floats(N * K);
    cuda_test_ok(dsv3_moe_combine_backward(COMBINE_REF(BACKWARD), F32, dys_ref, dw_ref, dout, ys,
                                           weights, order, N, K, D));
    void *d_dys = device_as(M * D, dtype);
    float *d_dw = cuda_test_device((size_t)(N * K) * sizeof(float));
    cuda_test_ok(dsv3_moe_combine_backward(COMBINE_CUDA(BACKWARD), dtype, d_dys, d_dw,
                                           upload_as(dout, N * D, dtype), d_ys, d_w, d_order, N, K,
                                           D));
    cuda_test_expect_close(download_as(d_dys, M * D, dtype), dys_ref, M * D, tolerance,
                           "combine dys");
    cuda_test_expect_close(cuda_test_download_floats(d_dw, N * K), dw_ref, N * K, TOLERANCE,
                           "combine dweights");
}

static void test_permute_matches_reference(void **state) {
    static const PermuteCase cases[] = {
        // N  K  E  D
        {1, 1, 1, 1},
        {1, 3, 8, 5},
        {37, 3, 8, 33},
        {200, 6, 64, 17},
        {3000, 6, 64, 3},
        {5000, 8, 16, 4},
        {0, 3, 8, 4},             // no tokens
        {100, 2, 300, 257},       // D beyond a block of the row kernels
        {5000, 1, 2, 3},          // two experts: long runs of one expert (stability)
        {70000, 8, 256, 8},       // many chunks and blocks; more rows than a row kernel's grid
        {50000, 6, 4096, 2},      // the plan's chunks capped by E
        {3, 2, (1 << 20) + 1, 2}, // E beyond the plan's cells: one chunk
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_permute_case(&cases[i], F32, 20 + i);
        cuda_test_teardown_case(state);
        check_permute_case(&cases[i], BF16, 20 + i);
        cuda_test_teardown_case(state);
    }
}

// The plan of a tiny case, by hand: experts of (n, k) = [[2, 0], [0, 1], [2, 1]].
static void test_plan_by_hand(void **state) {
    (void)state;
    const int32_t idx[6] = {2, 0, 0, 1, 2, 1};
    const int32_t want_order[6] = {1, 2, 3, 5, 0, 4};
    const int64_t want_offsets[4] = {0, 2, 4, 6};
    const int64_t N = 3, K = 2, E = 3;
    int32_t *d_idx = cuda_test_upload(idx, sizeof idx);
    int32_t *d_order = cuda_test_device(sizeof want_order);
    int64_t *d_offsets = cuda_test_device(sizeof want_offsets);
    cuda_test_ok(dsv3_moe_plan(PLAN_CUDA(), d_order, d_offsets, d_idx, N, K, E));
    cuda_test_expect_equal_ints(download_ints(d_order, 6), want_order, 6, "order");
    expect_equal_int64s(download_int64s(d_offsets, 4), want_offsets, 4, "offsets");
}

// Bad expert indices and order entries are found on the device and reported by synchronize.
static void test_permute_faults(void **state) {
    (void)state;
    const int64_t N = 2, K = 2, E = 4, M = 4, D = 2;
    const int32_t idx[4] = {0, 1, 5, 2};
    int32_t *d_idx = cuda_test_upload(idx, sizeof idx);
    int32_t *d_order = cuda_test_device(M * sizeof(int32_t));
    int64_t *d_offsets = cuda_test_device((E + 1) * sizeof(int64_t));
    expect_fault(dsv3_moe_plan(PLAN_CUDA(), d_order, d_offsets, d_idx, N, K, E),
                 "moe_plan: element 2 of its input holds 5");
    float *x = cuda_test_device(M * D * sizeof(float)),
          *xs = cuda_test_device(M * D * sizeof(float));
    float *w = cuda_test_device(M * sizeof(float));
    const int32_t outside[4] = {0, 1, 4, 2};
    int32_t *d_outside = cuda_test_upload(outside, sizeof outside);
    expect_fault(dsv3_moe_gather(&cuda_ctx, F32, xs, x, d_outside, M, K, D),
                 "moe_gather: element 2 of its input holds 4");
    expect_fault(dsv3_moe_combine_forward(COMBINE_CUDA(FORWARD), F32, x, xs, w, d_outside, N, K, D),
                 "moe_combine_forward: element 2");
    const int32_t repeated[4] = {0, 1, 1, 2}; // not a permutation
    int32_t *d_repeated = cuda_test_upload(repeated, sizeof repeated);
    expect_fault(
        dsv3_moe_combine_forward(COMBINE_CUDA(FORWARD), F32, x, xs, w, d_repeated, N, K, D),
        "moe_combine_forward");
    expect_fault(dsv3_moe_gather_backward(GATHER_BACKWARD_CUDA(), F32, x, xs, d_repeated, M, K, D),
                 "moe_gather_backward");
    // Outputs of their own: kernels.h lets none alias an input (the kernel still runs).
    float *dys = cuda_test_device(M * D * sizeof(float)), *dw = cuda_test_device(M * sizeof(float));
    expect_fault(dsv3_moe_combine_backward(COMBINE_CUDA(BACKWARD), F32, dys, dw, x, xs, w,
                                           d_repeated, N, K, D),
                 "moe_combine_backward");
    cuda_test_ok(dsv3_synchronize(&cuda_ctx)); // each reported once
}

static void test_permute_argument_checks(void **state) {
    (void)state;
    int64_t N = 2, K = 2, E = 4, M = 4, D = 2;
    int32_t *order = cuda_test_device(M * sizeof(int32_t));
    const int64_t garbage[5] = {9, 9, 9, 9, 9};
    int64_t *offsets = cuda_test_upload(garbage, sizeof garbage); // (E + 1)
    float *x = cuda_test_device(M * D * sizeof(float)),
          *xs = cuda_test_device(M * D * sizeof(float));
    float *w = cuda_test_device(M * sizeof(float));
    expect_usage_error(dsv3_moe_gather(&cuda_ctx, F32, xs, x, order, 3, 2, 2), "M = 3 rows");
    expect_usage_error(dsv3_moe_gather(&cuda_ctx, F32, NULL, x, order, M, K, D),
                       "must not be NULL");
    expect_usage_error(
        dsv3_moe_gather(&cuda_ctx, (Dsv3TensorDtype)BAD_DTYPE, xs, x, order, M, K, D), "dtype 7");
    expect_usage_error(dsv3_moe_plan(PLAN_CUDA(), order, offsets, order, N, K, 0), "E = 0");
    expect_usage_error(dsv3_moe_plan(PLAN_CUDA(), order, NULL, order, N, K, E), "offsets is NULL");
    expect_usage_error(dsv3_moe_plan(&cuda_ctx, order, offsets, order, (int64_t)1 << 30, 4, E),
                       "exceed int32 row ids");
    expect_usage_error(
        dsv3_moe_gather_backward(GATHER_BACKWARD_CUDA(), F32, x, NULL, order, M, K, D),
        "must not be NULL");
    expect_usage_error(
        dsv3_moe_combine_backward(COMBINE_CUDA(BACKWARD), F32, xs, NULL, x, xs, w, order, N, K, D),
        "must not be NULL");
    expect_usage_error(
        dsv3_moe_combine_forward(COMBINE_CUDA(FORWARD), F32, x, xs, w, order, N, K, 0), "D = 0");
    K = 0;
    expect_usage_error(
        dsv3_moe_combine_forward(COMBINE_CUDA(FORWARD), F32, x, xs, w, order, N, K, D), "K = 0");
    // No workspace where one is needed.
    K = 2;
    kernels_test_free_workspace(&cuda_ctx);
    expect_usage_error(dsv3_moe_combine_forward(&cuda_ctx, F32, x, xs, w, order, N, K, D),
                       "workspace");
    expect_usage_error(dsv3_moe_plan(&cuda_ctx, order, offsets, order, N, K, E), "workspace");
    // No tokens: nothing to do, and the plan's offsets all 0.
    cuda_test_ok(dsv3_moe_gather(&cuda_ctx, F32, NULL, NULL, NULL, 0, K, D));
    cuda_test_ok(dsv3_moe_combine_forward(&cuda_ctx, F32, NULL, NULL, NULL, NULL, 0, K, D));
    cuda_test_ok(dsv3_moe_plan(&cuda_ctx, NULL, offsets, NULL, 0, K, E));
    const int64_t zero[5] = {0};
    expect_equal_int64s(download_int64s(offsets, E + 1), zero, E + 1, "offsets without tokens");
}

static void test_permute_workspace(void **state) {
    (void)state;
    size_t bytes = 1;
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_MOE_GATHER,
                                      &(Dsv3OpShape){.M = 8, .K = 2, .D = 4}, &bytes));
    assert_int_equal(bytes, 0);
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_ROUTER_FORWARD,
                                      &(Dsv3OpShape){.N = 8, .E = 256, .K = 8}, &bytes));
    assert_int_equal(bytes, 0);
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_MOE_COMBINE_FORWARD,
                                      &(Dsv3OpShape){.N = 3, .K = 2, .D = 4}, &bytes));
    assert_true(bytes >= 6 * sizeof(int32_t));
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_MOE_GATHER_BACKWARD,
                                      &(Dsv3OpShape){.M = 6, .K = 2, .D = 4}, &bytes));
    assert_true(bytes >= 6 * sizeof(int32_t));
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_MOE_PLAN,
                                      &(Dsv3OpShape){.N = 3, .K = 2, .E = 4}, &bytes));
    assert_true(bytes >= 4 * sizeof(int64_t)); // one chunk's counts
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_MOE_PLAN,
                                      &(Dsv3OpShape){.N = 0, .K = 2, .E = 4}, &bytes));
    assert_int_equal(bytes, 0);
    expect_usage_error(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_MOE_PLAN,
                                            &(Dsv3OpShape){.N = INT64_MAX / 2, .K = 4, .E = 4},
                                            &bytes),
                       "does not fit");
}

static const struct CMUnitTest cases[] = {
    CUDA_TEST(test_router_matches_reference),
    CUDA_TEST(test_router_ties_go_to_lower_index),
    CUDA_TEST(test_router_bias_and_groups),
    CUDA_TEST(test_router_no_tokens),
    CUDA_TEST(test_router_argument_checks),
    CUDA_TEST(test_router_backward_fault),
    CUDA_TEST(test_counts_accumulate_matches_reference),
    CUDA_TEST(test_expert_bias_update_matches_reference),
    CUDA_TEST(test_load_balance_argument_checks),
    CUDA_TEST(test_permute_matches_reference),
    CUDA_TEST(test_plan_by_hand),
    CUDA_TEST(test_permute_faults),
    CUDA_TEST(test_permute_argument_checks),
    CUDA_TEST(test_permute_workspace),
};
CUDA_TEST_MAIN(cases)
