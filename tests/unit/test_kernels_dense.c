// Unit tests for the dense ops (embedding, RMSNorm, linear, SwiGLU, cross-entropy with the
// output head, AdamW, sum of squares, scale): the fast version against the reference version
// on random inputs of several shapes (odd sizes, N = 1, sizes large enough for the threaded
// paths), at 1 and 3 OpenMP threads; relative error ‖fast − ref‖ / ‖ref‖ ≤ 1e-5 for every
// output and gradient. Then the argument checks of both versions, with the messages that name
// the bad position and value, and the accuracy and limits of vec_exp (the vectorizable e^x
// behind the softmax and SwiGLU). The fast versions run on a DSV3_BACKEND_CPU context, the
// reference versions on a DSV3_BACKEND_CPU_REFERENCE one, each op with the workspace that
// dsv3_workspace_bytes asks for.
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/alloc.h"
#include "kernels/cpu/vec_exp.h"
#include "kernels/kernels.h"
#include "tests/kernels_test.h"
#include "tests/unit/kernels_fixture.h"

#define TOLERANCE 1e-5

// Thread counts every comparison runs at: one, and an odd count that splits unevenly.
static const int THREAD_COUNTS[] = {1, 3};
enum { THREAD_COUNT_CASES = sizeof THREAD_COUNTS / sizeof THREAD_COUNTS[0] };

// Every tensor of these ops is fp32.
static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

// ---- buffers (freed by the fixture, kernels_fixture.h) ----

static float *floats(int64_t count) { return test_floats(count); }

static int32_t *ints(int64_t count) { return test_buffer(count, sizeof(int32_t)); }

static float *copy_of(const float *src, int64_t count) {
    float *dst = floats(count);
    memcpy(dst, src, (size_t)count * sizeof(float));
    return dst;
}

// ---- random inputs (splitmix64: the same numbers on every machine) ----

static uint64_t rng_state;

static uint64_t rng_next(void) { return kernels_test_rng_next(&rng_state); }

static float rng_uniform(float scale) { return kernels_test_uniform(&rng_state, scale); }

static void fill(float *x, int64_t count, float scale) {
    for (int64_t i = 0; i < count; i++)
        x[i] = rng_uniform(scale);
}

static int32_t rng_index(int64_t bound) { return (int32_t)(rng_next() % (uint64_t)bound); }

// ---- comparison ----

static void expect_close(const float *fast, const float *ref, int64_t count, const char *what,
                         const char *shape, int threads) {
    double err = kernels_test_relative_error(fast, ref, count);
    if (!(err <= TOLERANCE))
        fail_msg("%s, %s, %d thread(s): relative error %.3e > %.0e", what, shape, threads, err,
                 TOLERANCE);
}

static void expect_error(Dsv3Err got, const char *fragment) {
    assert_int_equal(got, DSV3_ERR_USAGE);
    if (fragment && !strstr(dsv3_error_message(), fragment))
        fail_msg("error message '%s' does not mention '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

// ---- embedding ----

static void test_embedding_matches_reference(void **state) {
    (void)state;
    static const int64_t SHAPES[][3] = {{1, 1, 1}, {7, 33, 5}, {300, 100, 17}, {517, 130, 1000}};
    rng_state = 1;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        const int64_t N = SHAPES[s][0], D = SHAPES[s][1], V = SHAPES[s][2];
        char shape[64];
        snprintf(shape, sizeof shape, "N %" PRId64 " D %" PRId64 " V %" PRId64, N, D, V);
        int32_t *tokens = ints(N);
        for (int64_t n = 0; n < N; n++)
            tokens[n] = rng_index(V);
        tokens[N - 1] = tokens[0]; // a repeated token: the backward must sum its rows
        float *weight = floats(V * D), *dout = floats(N * D), *dweight0 = floats(V * D);
        fill(weight, V * D, 1);
        fill(dout, N * D, 1);
        fill(dweight0, V * D, 1);
        float *out_ref = floats(N * D), *dweight_ref = copy_of(dweight0, V * D);
        assert_int_equal(
            dsv3_embedding_forward(&reference, F32, out_ref, tokens, weight, N, D, V, 0), DSV3_OK);
        assert_int_equal(
            dsv3_embedding_backward(&reference, F32, dweight_ref, dout, tokens, N, D, V, 0),
            DSV3_OK);
        for (int t = 0; t < THREAD_COUNT_CASES; t++) {
            omp_set_num_threads(THREAD_COUNTS[t]);
            float *out = floats(N * D), *dweight = copy_of(dweight0, V * D);
            assert_int_equal(dsv3_embedding_forward(&cpu, F32, out, tokens, weight, N, D, V, 0),
                             DSV3_OK);
            assert_int_equal(dsv3_embedding_backward(&cpu, F32, dweight, dout, tokens, N, D, V, 0),
                             DSV3_OK);
            expect_close(out, out_ref, N * D, "embedding out", shape, THREAD_COUNTS[t]);
            expect_close(dweight, dweight_ref, V * D, "embedding dweight", shape, THREAD_COUNTS[t]);
        }
        test_buffers_free_after(0);
    }
}

static void test_embedding_rejects_bad_tokens(void **state) {
    (void)state;
    enum { N = 5, D = 4, V = 17 };
    int32_t tokens[N] = {0, 1, 2, -1, 4};
    float *weight = floats(V * D), *out = floats(N * D), *dweight = floats(V * D);
    float *dout = floats(N * D);
    fill(dout, N * D, 1);
    expect_error(dsv3_embedding_forward(&cpu, F32, out, tokens, weight, N, D, V, 0),
                 "tokens[3] = -1");
    expect_error(dsv3_embedding_forward(&reference, F32, out, tokens, weight, N, D, V, 0),
                 "tokens[3] = -1");
    expect_error(dsv3_embedding_backward(&cpu, F32, dweight, dout, tokens, N, D, V, 0),
                 "tokens[3] = -1");
    expect_error(dsv3_embedding_backward(&reference, F32, dweight, dout, tokens, N, D, V, 0),
                 "tokens[3] = -1");
    for (int64_t i = 0; i < V * D; i++)
        assert_true(dweight[i] == 0); // checked before any work
    tokens[3] = 3;
    tokens[1] = -2;
    expect_error(dsv3_embedding_forward(&cpu, F32, out, tokens, weight, N, D, V, 0),
                 "tokens[1] = -2");
    tokens[1] = 1;
    expect_error(dsv3_embedding_forward(&cpu, F32, out, tokens, weight, N, 0, V, 0), "D = 0");
    expect_error(dsv3_embedding_forward(&cpu, F32, out, tokens, weight, N, D, 0, 0), "V = 0");
    expect_error(dsv3_embedding_forward(&cpu, F32, out, tokens, weight, N, D, V, -1),
                 "vocab_start = -1");
    // The slice must hold int32 ids: it may end at 2^31, not past it.
    const int64_t last_start = ((int64_t)1 << 31) - V;
    assert_int_equal(dsv3_embedding_forward(&cpu, F32, out, tokens, weight, N, D, V, last_start),
                     DSV3_OK);
    expect_error(
        dsv3_embedding_forward(&reference, F32, out, tokens, weight, N, D, V, last_start + 1),
        "vocab_start + V <= 2^31");
    expect_error(dsv3_embedding_forward(&cpu, F32, out, tokens, weight, -1, D, V, 0), "N = -1");
    expect_error(dsv3_embedding_forward(&cpu, F32, NULL, tokens, weight, N, D, V, 0),
                 "out is NULL");
    expect_error(dsv3_embedding_backward(&reference, F32, dweight, dout, NULL, N, D, V, 0),
                 "tokens is NULL");
}

// ---- RMSNorm ----

static void test_rmsnorm_matches_reference(void **state) {
    (void)state;
    // Not D = 1: there dx is 0 up to eps (y = ±w whatever x), and what float32 leaves of that
    // cancellation is noise on both sides.
    static const int64_t SHAPES[][2] = {{1, 3}, {5, 7}, {37, 129}, {3, 1000}, {300, 300}};
    const float eps = 1e-6f;
    rng_state = 2;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        const int64_t N = SHAPES[s][0], D = SHAPES[s][1];
        char shape[64];
        snprintf(shape, sizeof shape, "N %" PRId64 " D %" PRId64, N, D);
        float *x = floats(N * D), *weight = floats(D), *dout = floats(N * D);
        float *dweight0 = floats(D);
        fill(x, N * D, 3);
        for (int64_t j = 0; j < D; j++)
            x[j] *= 100; // one row of large activations
        fill(weight, D, 1);
        fill(dout, N * D, 1);
        fill(dweight0, D, 1);
        float *out_ref = floats(N * D), *rstd_ref = floats(N), *dx_ref = floats(N * D);
        float *dweight_ref = copy_of(dweight0, D);
        assert_int_equal(
            dsv3_rmsnorm_forward(&reference, F32, out_ref, rstd_ref, x, weight, N, D, eps),
            DSV3_OK);
        assert_int_equal(dsv3_rmsnorm_backward(SIZED(&reference, RMSNORM_BACKWARD, .N = N, .D = D),
                                               F32, dx_ref, dweight_ref, dout, x, weight, rstd_ref,
                                               N, D),
                         DSV3_OK);
        for (int t = 0; t < THREAD_COUNT_CASES; t++) {
            omp_set_num_threads(THREAD_COUNTS[t]);
            float *out = floats(N * D), *rstd = floats(N), *dx = floats(N * D);
            float *dweight = copy_of(dweight0, D);
            assert_int_equal(dsv3_rmsnorm_forward(&cpu, F32, out, rstd, x, weight, N, D, eps),
                             DSV3_OK);
            assert_int_equal(dsv3_rmsnorm_backward(SIZED(&cpu, RMSNORM_BACKWARD, .N = N, .D = D),
                                                   F32, dx, dweight, dout, x, weight, rstd, N, D),
                             DSV3_OK);
            expect_close(out, out_ref, N * D, "rmsnorm out", shape, THREAD_COUNTS[t]);
            expect_close(rstd, rstd_ref, N, "rmsnorm rstd", shape, THREAD_COUNTS[t]);
            expect_close(dx, dx_ref, N * D, "rmsnorm dx", shape, THREAD_COUNTS[t]);
            expect_close(dweight, dweight_ref, D, "rmsnorm dweight", shape, THREAD_COUNTS[t]);
        }
        test_buffers_free_after(0);
    }
}

static void test_rmsnorm_rejects_bad_arguments(void **state) {
    (void)state;
    float *x = floats(8), *w = floats(4), *out = floats(8), *rstd = floats(2), *dx = floats(8);
    expect_error(dsv3_rmsnorm_forward(&cpu, F32, out, rstd, x, w, 2, 0, 1e-6f), "D = 0");
    expect_error(dsv3_rmsnorm_forward(&reference, F32, out, rstd, x, w, -3, 4, 1e-6f), "N = -3");
    expect_error(dsv3_rmsnorm_forward(&cpu, F32, out, rstd, x, w, 2, 4, -1.0f), "eps");
    expect_error(dsv3_rmsnorm_forward(&cpu, F32, out, NULL, x, w, 2, 4, 1e-6f), "NULL");
    expect_error(dsv3_rmsnorm_backward(SIZED(&cpu, RMSNORM_BACKWARD, .N = 2, .D = 4), F32, dx, NULL,
                                       out, x, w, rstd, 2, 4),
                 "NULL");
    expect_error(dsv3_rmsnorm_backward(SIZED(&reference, RMSNORM_BACKWARD, .N = 2, .D = 4), F32, dx,
                                       w, out, x, w, NULL, 2, 4),
                 "NULL");
}

// ---- linear ----

// linear_backward split in two, as a zero-bubble pipeline runs it: a dx-only call (no dweight,
// no x), then a dweight-only call (no dx, no weight) give exactly the combined call's dx and
// dweight, from the same starting dx0 and dweight0.
static void expect_split_backward(const Dsv3KernelContext *k, const float *dx, const float *dweight,
                                  const float *dx0, const float *dweight0, const float *dout,
                                  const float *x, const float *weight, int64_t N, int64_t I,
                                  int64_t O, int accumulate, const char *shape) {
    float *dx_only = copy_of(dx0, N * I), *dweight_only = copy_of(dweight0, O * I);
    assert_int_equal(
        dsv3_linear_backward(k, F32, dx_only, NULL, dout, NULL, weight, N, I, O, accumulate),
        DSV3_OK);
    assert_int_equal(
        dsv3_linear_backward(k, F32, NULL, dweight_only, dout, x, NULL, N, I, O, accumulate),
        DSV3_OK);
    if (memcmp(dx_only, dx, (size_t)(N * I) * sizeof(float)) != 0 ||
        memcmp(dweight_only, dweight, (size_t)(O * I) * sizeof(float)) != 0)
        fail_msg("linear_backward split into dx and dweight differs from the combined call (%s, "
                 "accumulate %d)",
                 shape, accumulate);
}

static void test_linear_matches_reference(void **state) {
    (void)state;
    static const int64_t SHAPES[][3] = {{1, 1, 1}, {5, 3, 7}, {33, 65, 17}, {200, 150, 100}};
    rng_state = 3;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        const int64_t N = SHAPES[s][0], I = SHAPES[s][1], O = SHAPES[s][2];
        char shape[64];
        snprintf(shape, sizeof shape, "N %" PRId64 " I %" PRId64 " O %" PRId64, N, I, O);
        float *x = floats(N * I), *weight = floats(O * I), *dout = floats(N * O);
        float *dx0 = floats(N * I), *dweight0 = floats(O * I);
        fill(x, N * I, 1);
        fill(weight, O * I, 1);
        fill(dout, N * O, 1);
        fill(dx0, N * I, 1);
        fill(dweight0, O * I, 1);
        for (int accumulate = 0; accumulate <= 1; accumulate++) {
            float *out_ref = floats(N * O), *dx_ref = copy_of(dx0, N * I);
            float *dweight_ref = copy_of(dweight0, O * I);
            assert_int_equal(dsv3_linear_forward(&reference, F32, out_ref, x, weight, N, I, O),
                             DSV3_OK);
            assert_int_equal(dsv3_linear_backward(&reference, F32, dx_ref, dweight_ref, dout, x,
                                                  weight, N, I, O, accumulate),
                             DSV3_OK);
            expect_split_backward(&reference, dx_ref, dweight_ref, dx0, dweight0, dout, x, weight,
                                  N, I, O, accumulate, shape);
            for (int t = 0; t < THREAD_COUNT_CASES; t++) {
                omp_set_num_threads(THREAD_COUNTS[t]);
                float *out = floats(N * O), *dx = copy_of(dx0, N * I);
                float *dweight = copy_of(dweight0, O * I);
                assert_int_equal(dsv3_linear_forward(&cpu, F32, out, x, weight, N, I, O), DSV3_OK);
                assert_int_equal(dsv3_linear_backward(&cpu, F32, dx, dweight, dout, x, weight, N, I,
                                                      O, accumulate),
                                 DSV3_OK);
                expect_close(out, out_ref, N * O, "linear out", shape, THREAD_COUNTS[t]);
                expect_close(dx, dx_ref, N * I,
                             accumulate ? "linear dx (accumulated)" : "linear dx", shape,
                             THREAD_COUNTS[t]);
                expect_close(dweight, dweight_ref, O * I, "linear dweight", shape,
                             THREAD_COUNTS[t]);
                expect_split_backward(&cpu, dx, dweight, dx0, dweight0, dout, x, weight, N, I, O,
                                      accumulate, shape);
            }
            // Free this round's buffers early: the shapes together would not fit TEST_BUFFERS_MAX.
            test_buffers_free_after(5);
        }
        test_buffers_free_after(0);
    }
}

static void test_linear_rejects_bad_arguments(void **state) {
    (void)state;
    float *x = floats(12), *w = floats(12), *out = floats(12);
    expect_error(dsv3_linear_forward(&cpu, F32, out, x, w, 2, 0, 3), "In = 0");
    expect_error(dsv3_linear_forward(&reference, F32, out, x, w, 2, 3, 0), "Out = 0");
    expect_error(dsv3_linear_forward(&cpu, F32, out, x, w, -1, 3, 3), "N = -1");
    expect_error(dsv3_linear_forward(&cpu, F32, out, x, w, (int64_t)1 << 32, 3, 3),
                 "N = 4294967296");
    expect_error(dsv3_linear_forward(&cpu, F32, out, NULL, w, 2, 3, 3), "NULL");
    expect_error(dsv3_linear_backward(&cpu, F32, NULL, NULL, out, x, w, 2, 3, 3, 0), "both NULL");
    expect_error(dsv3_linear_backward(&reference, F32, NULL, NULL, out, x, w, 2, 3, 3, 0),
                 "both NULL");
    expect_error(dsv3_linear_backward(&cpu, F32, out, w, NULL, x, w, 2, 3, 3, 0), "dout");
    expect_error(dsv3_linear_backward(&cpu, F32, NULL, w, out, NULL, w, 2, 3, 3, 0), "x must");
    expect_error(dsv3_linear_backward(&cpu, F32, out, w, out, x, NULL, 2, 3, 3, 0), "weight");
    expect_error(dsv3_linear_backward(&reference, F32, out, w, out, x, NULL, 2, 3, 3, 0), "weight");
}

// ---- SwiGLU ----

static void test_swiglu_matches_reference(void **state) {
    (void)state;
    static const int64_t SHAPES[][2] = {{1, 1}, {3, 5}, {100, 257}};
    static const float TAILS[] = {-200.0f, -90.0f, -20.0f, 0.0f, 20.0f, 90.0f};
    rng_state = 4;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        const int64_t N = SHAPES[s][0], F = SHAPES[s][1], count = N * F;
        char shape[64];
        snprintf(shape, sizeof shape, "N %" PRId64 " F %" PRId64, N, F);
        float *a = floats(count), *b = floats(count), *dh = floats(count);
        fill(a, count, 6);
        fill(b, count, 1);
        fill(dh, count, 1);
        for (size_t i = 0; i < sizeof TAILS / sizeof TAILS[0] && (int64_t)i < count; i++)
            a[i] = TAILS[i]; // σ saturates; e^−a overflows for the most negative
        float *h_ref = floats(count), *da_ref = floats(count), *db_ref = floats(count);
        assert_int_equal(dsv3_swiglu_forward(&reference, F32, h_ref, a, b, N, F), DSV3_OK);
        assert_int_equal(dsv3_swiglu_backward(&reference, F32, da_ref, db_ref, dh, a, b, N, F),
                         DSV3_OK);
        for (int t = 0; t < THREAD_COUNT_CASES; t++) {
            omp_set_num_threads(THREAD_COUNTS[t]);
            float *h = floats(count), *da = floats(count), *db = floats(count);
            assert_int_equal(dsv3_swiglu_forward(&cpu, F32, h, a, b, N, F), DSV3_OK);
            assert_int_equal(dsv3_swiglu_backward(&cpu, F32, da, db, dh, a, b, N, F), DSV3_OK);
            expect_close(h, h_ref, count, "swiglu h", shape, THREAD_COUNTS[t]);
            expect_close(da, da_ref, count, "swiglu da", shape, THREAD_COUNTS[t]);
            expect_close(db, db_ref, count, "swiglu db", shape, THREAD_COUNTS[t]);
            for (int64_t i = 0; i < count; i++)
                assert_true(isfinite(h[i]) && isfinite(da[i]));
            // In place: da over a, db over b.
            float *a_in = copy_of(a, count), *b_in = copy_of(b, count);
            assert_int_equal(dsv3_swiglu_backward(&cpu, F32, a_in, b_in, dh, a_in, b_in, N, F),
                             DSV3_OK);
            expect_close(a_in, da_ref, count, "swiglu da (in place)", shape, THREAD_COUNTS[t]);
            expect_close(b_in, db_ref, count, "swiglu db (in place)", shape, THREAD_COUNTS[t]);
        }
        test_buffers_free_after(0);
    }
}

static void test_swiglu_rejects_bad_arguments(void **state) {
    (void)state;
    float *a = floats(4), *b = floats(4), *h = floats(4);
    expect_error(dsv3_swiglu_forward(&cpu, F32, h, a, b, 2, 0), "F = 0");
    expect_error(dsv3_swiglu_forward(&reference, F32, h, a, b, -2, 2), "N = -2");
    expect_error(dsv3_swiglu_forward(&cpu, F32, NULL, a, b, 2, 2), "NULL");
    expect_error(dsv3_swiglu_backward(&cpu, F32, h, NULL, h, a, b, 2, 2), "NULL");
}

// ---- cross-entropy with the output head ----

typedef struct {
    int64_t N, D, V, chunk;
    int ignore_every; // every k-th label is DSV3_IGNORE_INDEX; 0: none; 1: all
} CrossEntropyCase;

// A context sized for the cross-entropy of the shape in scope (N, D, V, chunk).
#define CE(ctx) SIZED((ctx), CROSS_ENTROPY, .N = N, .D = D, .V = V, .chunk = chunk)

static void test_cross_entropy_matches_reference(void **state) {
    (void)state;
    static const CrossEntropyCase CASES[] = {
        {1, 1, 1, 1, 0},       {1, 4, 3, 1, 0},    {37, 16, 50, 8, 5},  {45, 24, 500, 16, 7},
        {64, 32, 2048, 64, 3}, {10, 8, 100, 4, 1}, {20, 8, 300, 64, 0}, {33, 5, 129, 32, 0},
    };
    rng_state = 5;
    for (size_t s = 0; s < sizeof CASES / sizeof CASES[0]; s++) {
        const CrossEntropyCase c = CASES[s];
        const int64_t N = c.N, D = c.D, V = c.V, chunk = c.chunk;
        char shape[96];
        snprintf(shape, sizeof shape,
                 "N %" PRId64 " D %" PRId64 " V %" PRId64 " chunk %" PRId64 " ignore every %d", N,
                 D, V, c.chunk, c.ignore_every);
        int32_t *labels = ints(N);
        int64_t counted = 0;
        for (int64_t n = 0; n < N; n++) {
            int ignored = c.ignore_every > 0 && n % c.ignore_every == 0;
            labels[n] = ignored ? DSV3_IGNORE_INDEX : rng_index(V);
            counted += !ignored;
        }
        const float grad_scale = 1.0f / (float)(counted > 0 ? counted : 1);
        float *h = floats(N * D), *weight = floats(V * D), *dweight0 = floats(V * D);
        fill(h, N * D, 1);
        fill(weight, V * D, 1);
        fill(dweight0, V * D, 0.01f);
        double loss_ref = -1;
        float *dh_ref = floats(N * D), *dweight_ref = copy_of(dweight0, V * D);
        assert_int_equal(dsv3_cross_entropy(CE(&reference), F32, &loss_ref, dh_ref, dweight_ref, h,
                                            weight, labels, N, D, V, grad_scale, c.chunk),
                         DSV3_OK);
        for (int t = 0; t < THREAD_COUNT_CASES; t++) {
            omp_set_num_threads(THREAD_COUNTS[t]);
            double loss = -1, loss_only = -1;
            float *dh = floats(N * D), *dweight = copy_of(dweight0, V * D);
            fill(dh, N * D, 1); // dh is written, whatever was there
            assert_int_equal(dsv3_cross_entropy(CE(&cpu), F32, &loss, dh, dweight, h, weight,
                                                labels, N, D, V, grad_scale, c.chunk),
                             DSV3_OK);
            assert_int_equal(dsv3_cross_entropy(CE(&cpu), F32, &loss_only, NULL, NULL, h, weight,
                                                labels, N, D, V, grad_scale, c.chunk),
                             DSV3_OK);
            double loss_err = loss_ref == 0 ? fabs(loss) : fabs(loss - loss_ref) / fabs(loss_ref);
            if (!(loss_err <= TOLERANCE))
                fail_msg("cross_entropy loss, %s: %.9g vs reference %.9g", shape, loss, loss_ref);
            assert_true(loss_only == loss);
            expect_close(dh, dh_ref, N * D, "cross_entropy dh", shape, THREAD_COUNTS[t]);
            expect_close(dweight, dweight_ref, V * D, "cross_entropy dweight", shape,
                         THREAD_COUNTS[t]);
        }
        test_buffers_free_after(0);
    }
}

static void test_cross_entropy_rejects_bad_arguments(void **state) {
    (void)state;
    enum { N = 8, D = 4, V = 50 };
    int32_t labels[N] = {1, 2, DSV3_IGNORE_INDEX, 3, 4, V, 6, 7};
    float *h = floats(N * D), *weight = floats(V * D), *dh = floats(N * D);
    float *dweight = floats(V * D);
    fill(h, N * D, 1);
    fill(weight, V * D, 1);
    double loss = 0;
    int64_t chunk = 3;
    expect_error(dsv3_cross_entropy(CE(&cpu), F32, &loss, dh, dweight, h, weight, labels, N, D, V,
                                    1.0f, chunk),
                 "labels[5] = 50");
    expect_error(dsv3_cross_entropy(CE(&reference), F32, &loss, dh, dweight, h, weight, labels, N,
                                    D, V, 1.0f, chunk),
                 "labels[5] = 50");
    for (int64_t i = 0; i < V * D; i++)
        assert_true(dweight[i] == 0); // checked before any work
    labels[5] = -1;
    expect_error(dsv3_cross_entropy(CE(&cpu), F32, &loss, dh, dweight, h, weight, labels, N, D, V,
                                    1.0f, chunk),
                 "labels[5] = -1");
    labels[5] = 5;
    chunk = 0;
    expect_error(dsv3_cross_entropy(CE(&cpu), F32, &loss, dh, dweight, h, weight, labels, N, D, V,
                                    1.0f, chunk),
                 "chunk = 0");
    chunk = -4;
    expect_error(dsv3_cross_entropy(CE(&reference), F32, &loss, dh, dweight, h, weight, labels, N,
                                    D, V, 1.0f, chunk),
                 "chunk = -4");
    chunk = 3;
    expect_error(
        dsv3_cross_entropy(CE(&cpu), F32, &loss, dh, NULL, h, weight, labels, N, D, V, 1.0f, chunk),
        "dweight");
    expect_error(dsv3_cross_entropy(CE(&cpu), F32, NULL, dh, dweight, h, weight, labels, N, D, V,
                                    1.0f, chunk),
                 "loss_sum");
    expect_error(dsv3_cross_entropy(SIZED(&cpu, CROSS_ENTROPY, .N = N, .D = D, .V = 0, .chunk = 3),
                                    F32, &loss, dh, dweight, h, weight, labels, N, D, 0, 1.0f, 3),
                 "V = 0");
    expect_error(dsv3_cross_entropy(CE(&cpu), F32, &loss, dh, dweight, h, weight, NULL, N, D, V,
                                    1.0f, chunk),
                 "NULL");
}

// ---- AdamW, sum of squares, scale ----

static void test_adamw_matches_reference(void **state) {
    (void)state;
    static const int64_t SIZES[] = {1, 7, 40001};
    static const float LRS[] = {1e-3f, 3e-3f, 2e-3f};
    enum { STEPS = sizeof LRS / sizeof LRS[0] };
    rng_state = 6;
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++) {
        for (int decay = 0; decay <= 1; decay++) {
            const int64_t n = SIZES[s];
            char shape[64];
            snprintf(shape, sizeof shape, "n %" PRId64 " weight_decay %s", n, decay ? "0.1" : "0");
            float *param0 = floats(n), *grads = floats(STEPS * n);
            fill(param0, n, 1);
            fill(grads, STEPS * n, 0.1f);
            for (int k = 0; k < STEPS; k++)
                grads[k * n] = 0; // m = v = 0 there: the update is 0 / (0 + eps)
            float *p_ref = copy_of(param0, n), *m_ref = floats(n), *v_ref = floats(n);
            for (int t = 0; t < THREAD_COUNT_CASES; t++) {
                omp_set_num_threads(THREAD_COUNTS[t]);
                float *p = copy_of(param0, n), *m = floats(n), *v = floats(n);
                memcpy(p_ref, param0, (size_t)n * sizeof(float));
                memset(m_ref, 0, (size_t)n * sizeof(float));
                memset(v_ref, 0, (size_t)n * sizeof(float));
                for (int k = 0; k < STEPS; k++) {
                    Dsv3AdamWArgs args = {.lr = LRS[k],
                                          .beta1 = 0.9f,
                                          .beta2 = 0.95f,
                                          .eps = 1e-8f,
                                          .weight_decay = decay ? 0.1f : 0.0f,
                                          .step = k + 1};
                    assert_int_equal(dsv3_adamw_step(&cpu, p, grads + k * n, m, v, n, &args),
                                     DSV3_OK);
                    assert_int_equal(
                        dsv3_adamw_step(&reference, p_ref, grads + k * n, m_ref, v_ref, n, &args),
                        DSV3_OK);
                    expect_close(p, p_ref, n, "adamw param", shape, THREAD_COUNTS[t]);
                    expect_close(m, m_ref, n, "adamw m", shape, THREAD_COUNTS[t]);
                    expect_close(v, v_ref, n, "adamw v", shape, THREAD_COUNTS[t]);
                }
            }
            test_buffers_free_after(0);
        }
    }
}

static void test_adamw_rejects_bad_arguments(void **state) {
    (void)state;
    float *p = floats(4), *g = floats(4), *m = floats(4), *v = floats(4);
    const Dsv3AdamWArgs good = {
        .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .step = 1};
    Dsv3AdamWArgs a = good;
    a.step = 0;
    expect_error(dsv3_adamw_step(&cpu, p, g, m, v, 4, &a), "step = 0");
    expect_error(dsv3_adamw_step(&reference, p, g, m, v, 4, &a), "step = 0");
    a = good;
    a.beta1 = 1.0f;
    expect_error(dsv3_adamw_step(&cpu, p, g, m, v, 4, &a), "beta1");
    a = good;
    a.beta2 = -0.5f;
    expect_error(dsv3_adamw_step(&cpu, p, g, m, v, 4, &a), "beta2");
    a = good;
    a.lr = -1.0f;
    expect_error(dsv3_adamw_step(&reference, p, g, m, v, 4, &a), "lr");
    expect_error(dsv3_adamw_step(&cpu, p, g, m, v, 4, NULL), "args");
    expect_error(dsv3_adamw_step(&cpu, p, NULL, m, v, 4, &good), "NULL");
    expect_error(dsv3_adamw_step(&cpu, p, g, m, v, -1, &good), "n = -1");
}

static void test_sum_squares_and_scale_match_reference(void **state) {
    (void)state;
    static const int64_t SIZES[] = {0, 1, 1000, 100003};
    rng_state = 7;
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++) {
        const int64_t n = SIZES[s];
        float *x = floats(n);
        fill(x, n, 2);
        double expected = -1;
        assert_int_equal(dsv3_sum_squares(&reference, &expected, x, n), DSV3_OK);
        float *scaled_ref = copy_of(x, n);
        assert_int_equal(dsv3_scale(&reference, scaled_ref, n, 0.37f), DSV3_OK);
        for (int t = 0; t < THREAD_COUNT_CASES; t++) {
            omp_set_num_threads(THREAD_COUNTS[t]);
            double got = -1;
            assert_int_equal(dsv3_sum_squares(&cpu, &got, x, n), DSV3_OK);
            // Both sum in double: only the order differs.
            assert_true(fabs(got - expected) <= 1e-12 * (expected > 0 ? expected : 1));
            float *scaled = copy_of(x, n);
            assert_int_equal(dsv3_scale(&cpu, scaled, n, 0.37f), DSV3_OK);
            if (n > 0) assert_memory_equal(scaled, scaled_ref, (size_t)n * sizeof(float));
        }
        test_buffers_free_after(0);
    }
}

// ---- the vectorizable exponential behind the softmax and SwiGLU ----

static void test_vec_exp_is_accurate_and_saturates(void **state) {
    (void)state;
    static const double MAX_ULPS = 4;
    static const double FLT_ULP = 5.960464477539063e-08; // 2^−24, half the spacing at 1
    double worst = 0;
    for (float x = VEC_EXP_MIN_ARG; x <= VEC_EXP_MAX_ARG; x += 0.0007f) {
        const double exact = exp((double)x);
        const double rel = fabs((double)vec_exp(x) - exact) / exact;
        if (rel > worst) worst = rel;
    }
    if (!(worst <= MAX_ULPS * 2 * FLT_ULP))
        fail_msg("vec_exp: worst relative error %.3e over its range", worst);
    assert_true(vec_exp(0.0f) == 1.0f);
    // Clamped outside the range: tiny and huge, but finite and of the right sign.
    assert_true(vec_exp(-1000.0f) >= 0.0f && vec_exp(-1000.0f) < 1.2e-38f);
    assert_true(vec_exp(-INFINITY) >= 0.0f && vec_exp(-INFINITY) < 1.2e-38f);
    assert_true(vec_exp(1000.0f) > 1e38f && isfinite(vec_exp(1000.0f)));
    assert_true(isnan(vec_exp(NAN)));
    // The sigmoid built on it reaches its limits.
    assert_true(1.0f / (1.0f + vec_exp(200.0f)) < 1e-37f);
    assert_true(1.0f / (1.0f + vec_exp(-200.0f)) == 1.0f);
}

// ---- empty inputs: nothing to do, and no NULL checks on empty tensors ----

static void test_empty_inputs_are_accepted(void **state) {
    (void)state;
    double loss = -1;
    const Dsv3AdamWArgs args = {
        .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .step = 1};
    assert_int_equal(dsv3_embedding_forward(&cpu, F32, NULL, NULL, NULL, 0, 8, 10, 0), DSV3_OK);
    assert_int_equal(dsv3_embedding_backward(&cpu, F32, NULL, NULL, NULL, 0, 8, 10, 0), DSV3_OK);
    assert_int_equal(dsv3_rmsnorm_forward(&cpu, F32, NULL, NULL, NULL, NULL, 0, 8, 1e-6f), DSV3_OK);
    assert_int_equal(dsv3_rmsnorm_backward(SIZED(&cpu, RMSNORM_BACKWARD, .N = 0, .D = 8), F32, NULL,
                                           NULL, NULL, NULL, NULL, NULL, 0, 8),
                     DSV3_OK);
    assert_int_equal(dsv3_linear_forward(&cpu, F32, NULL, NULL, NULL, 0, 8, 4), DSV3_OK);
    assert_int_equal(dsv3_linear_backward(&cpu, F32, NULL, NULL, NULL, NULL, NULL, 0, 8, 4, 0),
                     DSV3_OK);
    assert_int_equal(dsv3_swiglu_forward(&cpu, F32, NULL, NULL, NULL, 0, 8), DSV3_OK);
    assert_int_equal(dsv3_swiglu_backward(&cpu, F32, NULL, NULL, NULL, NULL, NULL, 0, 8), DSV3_OK);
    const int64_t N = 0, D = 8, V = 10, chunk = 4;
    assert_int_equal(
        dsv3_cross_entropy(CE(&cpu), F32, &loss, NULL, NULL, NULL, NULL, NULL, N, D, V, 1, chunk),
        DSV3_OK);
    assert_true(loss == 0);
    loss = -1;
    assert_int_equal(dsv3_cross_entropy(CE(&reference), F32, &loss, NULL, NULL, NULL, NULL, NULL, N,
                                        D, V, 1, chunk),
                     DSV3_OK);
    assert_true(loss == 0);
    assert_int_equal(dsv3_adamw_step(&cpu, NULL, NULL, NULL, NULL, 0, &args), DSV3_OK);
    double sum = -1;
    assert_int_equal(dsv3_sum_squares(&cpu, &sum, NULL, 0), DSV3_OK);
    assert_true(sum == 0);
}

#define FIXTURE(test)                                                                              \
    cmocka_unit_test_setup_teardown(test, kernels_fixture_setup, kernels_fixture_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        FIXTURE(test_embedding_matches_reference),
        FIXTURE(test_embedding_rejects_bad_tokens),
        FIXTURE(test_rmsnorm_matches_reference),
        FIXTURE(test_rmsnorm_rejects_bad_arguments),
        FIXTURE(test_linear_matches_reference),
        FIXTURE(test_linear_rejects_bad_arguments),
        FIXTURE(test_swiglu_matches_reference),
        FIXTURE(test_swiglu_rejects_bad_arguments),
        FIXTURE(test_cross_entropy_matches_reference),
        FIXTURE(test_cross_entropy_rejects_bad_arguments),
        FIXTURE(test_adamw_matches_reference),
        FIXTURE(test_adamw_rejects_bad_arguments),
        FIXTURE(test_sum_squares_and_scale_match_reference),
        FIXTURE(test_vec_exp_is_accurate_and_saturates),
        FIXTURE(test_empty_inputs_are_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
