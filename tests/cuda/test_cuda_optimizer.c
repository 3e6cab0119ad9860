// cuda_optimizer: the CUDA optimizer ops (adamw_step, sum_squares, scale) against the reference
// CPU backend, with the same random inputs.
//
// Tolerances (relative, ‖cuda − ref‖ / ‖ref‖):
//   adamw_step: ADAMW_TOLERANCE = 1e-7 on param, m and v after each of several steps. The CUDA
//     step computes every element in double with the reference's operations in its order
//     (unfused), so the results are expected bit for bit; 1e-7 is what the fast CPU version is
//     held to.
//   sum_squares: SUM_TOLERANCE = 1e-12 (both sum in double, in different orders); the CUDA
//     result must also be the same bits on a second run (fixed-order reduction), and 0 for n = 0.
//   scale: exact (one fp32 product per element).
// Sizes: 1, odd, and beyond one grid of the element-wise kernels (4096 × 256 elements) and of
// the reduction's first pass. Also the argument checks (DSV3_ERR_USAGE and the CPU's messages).
//
// Legend: n elements.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/cuda/cuda_test.h"

static const double ADAMW_TOLERANCE = 1e-7;
static const double SUM_TOLERANCE = 1e-12;

// More than one grid of the element-wise kernels (CUDA_MAX_BLOCKS × CUDA_THREADS = 2^20).
enum { BEYOND_ONE_GRID = (1 << 20) + 3 };

// ---- helpers ----

static float *upload_floats(const float *x, int64_t n) {
    return cuda_test_upload(x, (size_t)n * sizeof(float));
}

static void expect_usage_error(Dsv3Err got, const char *fragment) {
    assert_int_equal(got, DSV3_ERR_USAGE);
    if (!strstr(dsv3_error_message(), fragment))
        fail_msg("error message '%s' does not mention '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

// The device double at `device`.
static double download_double(const double *device) {
    double x = 0;
    cuda_test_download(&x, device, sizeof x);
    return x;
}

// ---- adamw_step ----

// Steps of a case, each with its own learning rate (a schedule).
static const float ADAMW_LRS[] = {1e-3f, 3e-3f, 2e-3f};
enum { ADAMW_STEPS = sizeof ADAMW_LRS / sizeof ADAMW_LRS[0] };

static void check_adamw_case(int64_t n, float weight_decay, uint64_t seed) {
    uint64_t rng = seed;
    float *param = cuda_test_random_floats(&rng, n, 1.0f);
    float *grads = cuda_test_random_floats(&rng, ADAMW_STEPS * n, 0.1f); // (steps, n)
    for (int k = 0; k < ADAMW_STEPS; k++)
        grads[k * n] = 0; // m = v = 0 there on the first step: the update is 0 / (0 + eps)
    float *p_ref = cuda_test_copy_floats(param, n), *m_ref = test_floats(n),
          *v_ref = test_floats(n);
    float *p = upload_floats(param, n), *m = cuda_test_device((size_t)n * sizeof(float));
    float *v = cuda_test_device((size_t)n * sizeof(float));
    float *g = upload_floats(grads, ADAMW_STEPS * n);
    for (int k = 0; k < ADAMW_STEPS; k++) {
        const Dsv3AdamWArgs args = {.lr = ADAMW_LRS[k],
                                    .beta1 = 0.9f,
                                    .beta2 = 0.95f,
                                    .eps = 1e-8f,
                                    .weight_decay = weight_decay,
                                    .step = k + 1};
        cuda_test_ok(dsv3_adamw_step(&cuda_ctx, p, g + k * n, m, v, n, &args));
        cuda_test_ok(dsv3_adamw_step(&ref_ctx, p_ref, grads + k * n, m_ref, v_ref, n, &args));
        cuda_test_expect_close(cuda_test_download_floats(p, n), p_ref, n, ADAMW_TOLERANCE,
                               "adamw param");
        cuda_test_expect_close(cuda_test_download_floats(m, n), m_ref, n, ADAMW_TOLERANCE,
                               "adamw m");
        cuda_test_expect_close(cuda_test_download_floats(v, n), v_ref, n, ADAMW_TOLERANCE,
                               "adamw v");
    }
}

static void test_adamw_matches_reference(void **state) {
    static const int64_t SIZES[] = {1, 7, 40001, BEYOND_ONE_GRID};
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++)
        for (int decay = 0; decay <= 1; decay++) {
            check_adamw_case(SIZES[s], decay ? 0.1f : 0.0f, 100 + s);
            cuda_test_teardown_case(state); // this shape's buffers
        }
}

// A late step (small bias corrections' complements) with larger moments.
static void test_adamw_late_step(void **state) {
    (void)state;
    enum { N = 1000 };
    uint64_t rng = 11;
    float *param = cuda_test_random_floats(&rng, N, 2.0f),
          *grad = cuda_test_random_floats(&rng, N, 1.0f);
    float *m0 = cuda_test_random_floats(&rng, N, 0.5f),
          *v0 = cuda_test_random_floats(&rng, N, 0.5f);
    for (int64_t i = 0; i < N; i++)
        v0[i] = fabsf(v0[i]); // a second moment is never negative
    const Dsv3AdamWArgs args = {.lr = 3e-4f,
                                .beta1 = 0.9f,
                                .beta2 = 0.999f,
                                .eps = 1e-6f,
                                .weight_decay = 0.01f,
                                .step = 12345};
    float *p = upload_floats(param, N), *m = upload_floats(m0, N), *v = upload_floats(v0, N);
    float *g = upload_floats(grad, N);
    cuda_test_ok(dsv3_adamw_step(&cuda_ctx, p, g, m, v, N, &args));
    cuda_test_ok(dsv3_adamw_step(&ref_ctx, param, grad, m0, v0, N, &args));
    cuda_test_expect_close(cuda_test_download_floats(p, N), param, N, ADAMW_TOLERANCE,
                           "adamw param (late step)");
    cuda_test_expect_close(cuda_test_download_floats(m, N), m0, N, ADAMW_TOLERANCE,
                           "adamw m (late step)");
    cuda_test_expect_close(cuda_test_download_floats(v, N), v0, N, ADAMW_TOLERANCE,
                           "adamw v (late step)");
}

static void test_adamw_argument_checks(void **state) {
    (void)state;
    enum { N = 4 };
    float *p = cuda_test_device(N * sizeof(float)), *g = cuda_test_device(N * sizeof(float));
    float *m = cuda_test_device(N * sizeof(float)), *v = cuda_test_device(N * sizeof(float));
    const Dsv3AdamWArgs good = {
        .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .step = 1};
    Dsv3AdamWArgs a = good;
    a.step = 0;
    expect_usage_error(dsv3_adamw_step(&cuda_ctx, p, g, m, v, N, &a), "step = 0");
    a = good;
    a.beta1 = 1.0f;
    expect_usage_error(dsv3_adamw_step(&cuda_ctx, p, g, m, v, N, &a), "beta1");
    a = good;
    a.beta2 = -0.5f;
    expect_usage_error(dsv3_adamw_step(&cuda_ctx, p, g, m, v, N, &a), "beta2");
    a = good;
    a.lr = -1.0f;
    expect_usage_error(dsv3_adamw_step(&cuda_ctx, p, g, m, v, N, &a), "lr");
    a = good;
    a.eps = -1.0f;
    expect_usage_error(dsv3_adamw_step(&cuda_ctx, p, g, m, v, N, &a), "eps");
    a = good;
    a.weight_decay = -0.1f;
    expect_usage_error(dsv3_adamw_step(&cuda_ctx, p, g, m, v, N, &a), "weight_decay");
    expect_usage_error(dsv3_adamw_step(&cuda_ctx, p, g, m, v, N, NULL), "args");
    expect_usage_error(dsv3_adamw_step(&cuda_ctx, p, NULL, m, v, N, &good), "NULL");
    expect_usage_error(dsv3_adamw_step(&cuda_ctx, p, g, m, v, -1, &good), "n = -1");
    // No elements: nothing to touch, NULL allowed.
    cuda_test_ok(dsv3_adamw_step(&cuda_ctx, NULL, NULL, NULL, NULL, 0, &good));
    cuda_test_ok(dsv3_synchronize(&cuda_ctx));
}

// ---- sum_squares and scale ----

static void test_sum_squares_matches_reference(void **state) {
    static const int64_t SIZES[] = {0, 1, 1000, 100003, 3 * BEYOND_ONE_GRID};
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++) {
        const int64_t n = SIZES[s];
        uint64_t rng = 200 + s;
        float *x = cuda_test_random_floats(&rng, n, 2.0f);
        double want = -1;
        cuda_test_ok(dsv3_sum_squares(&ref_ctx, &want, x, n));
        const double garbage = -12345.0; // n = 0 must write 0 over it
        double *out = cuda_test_upload(&garbage, sizeof garbage);
        float *dx = upload_floats(x, n);
        cuda_test_ok(dsv3_sum_squares(&cuda_ctx, out, dx, n));
        const double got = download_double(out);
        if (!(fabs(got - want) <= SUM_TOLERANCE * (want > 0 ? want : 1)))
            fail_msg("sum_squares n = %lld: %.17g, expected %.17g", (long long)n, got, want);
        // The same bits again: the reduction's order depends on n only.
        cuda_test_ok(dsv3_sum_squares(&cuda_ctx, out, dx, n));
        const double again = download_double(out);
        assert_memory_equal(&again, &got, sizeof got);
        cuda_test_teardown_case(state);
    }
}

static void test_scale_matches_reference(void **state) {
    static const int64_t SIZES[] = {1, 1000, BEYOND_ONE_GRID};
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++) {
        const int64_t n = SIZES[s];
        uint64_t rng = 300 + s;
        float *x = cuda_test_random_floats(&rng, n, 2.0f);
        float *dx = upload_floats(x, n);
        cuda_test_ok(dsv3_scale(&ref_ctx, x, n, 0.37f));
        cuda_test_ok(dsv3_scale(&cuda_ctx, dx, n, 0.37f));
        assert_memory_equal(cuda_test_download_floats(dx, n), x, (size_t)n * sizeof(float));
        cuda_test_teardown_case(state);
    }
    cuda_test_ok(dsv3_scale(&cuda_ctx, NULL, 0, 2.0f)); // nothing to scale
}

static void test_sum_squares_and_scale_argument_checks(void **state) {
    (void)state;
    float *x = cuda_test_device(4 * sizeof(float));
    double *out = cuda_test_device(sizeof(double));
    expect_usage_error(dsv3_sum_squares(&cuda_ctx, NULL, x, 4), "out is NULL");
    expect_usage_error(dsv3_sum_squares(&cuda_ctx, out, x, -1), "n = -1");
    expect_usage_error(dsv3_sum_squares(&cuda_ctx, out, NULL, 4), "x is NULL");
    expect_usage_error(dsv3_scale(&cuda_ctx, x, -2, 1.0f), "n = -2");
    expect_usage_error(dsv3_scale(&cuda_ctx, NULL, 4, 1.0f), "x is NULL");
}

static const struct CMUnitTest cases[] = {
    CUDA_TEST(test_adamw_matches_reference), CUDA_TEST(test_adamw_late_step),
    CUDA_TEST(test_adamw_argument_checks),   CUDA_TEST(test_sum_squares_matches_reference),
    CUDA_TEST(test_scale_matches_reference), CUDA_TEST(test_sum_squares_and_scale_argument_checks),
};
CUDA_TEST_MAIN(cases)
