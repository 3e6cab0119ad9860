// Unit tests for bf16 GEMMs on the CPU (kernels/cpu/gemm_bf16.c, through a context whose
// matmul dtype is bf16):
//   - the GEMM against a float64 product of the operands rounded to bf16, for the four
//     transposes, alpha and beta, sizes that cut every level of the blocking (the micro-tile,
//     the packed blocks of M, N and K), K odd and K = 0, beta 0 over a C of NaNs (not read);
//     within 1e-6 of the sum of |products| (fp32 accumulation), and the same bits at 1 and 3
//     threads;
//   - the linear op in bf16 against the reference op given the rounded operands (≤ 1e-5);
//   - the ops whose GEMMs meet values they compute themselves (routed experts, attention, the
//     output head with cross-entropy) in bf16 against fp32: close (≤ 2e-2 relative) but not
//     equal (> 1e-5), so that bf16 is really used; the vocabulary-parallel head in bf16 equal
//     to the fused one in bf16 (≤ 1e-6);
//   - the errors of dsv3_kernel_context_set_matmul.
// On a CPU without AVX512-BF16 only the errors are checked (the cpu backend must refuse bf16,
// naming the instruction set), and the rest is skipped.
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/alloc.h"
#include "kernels/backend.h"
#include "kernels/cpu/bf16.h"
#include "kernels/cpu/cpu.h"
#include "kernels/kernels.h"
#include "tests/kernels_test.h"
#include "tests/unit/kernels_fixture.h"

static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

// ---- fixtures: the fp32 and reference contexts (kernels_fixture.h) and a bf16 one ----

static Dsv3KernelContext bf16;

static int bf16_supported(void) {
    const char *why = NULL;
    return dsv3_cpu_gemm_bf16_supported(&why);
}

static int setup(void **state) {
    if (kernels_fixture_setup(state) != 0) return -1;
    if (dsv3_kernel_context_create(&bf16, DSV3_BACKEND_CPU, KERNELS_TEST_NO_DEVICE) != DSV3_OK)
        return -1;
    if (bf16_supported() && dsv3_kernel_context_set_matmul(&bf16, DSV3_TENSOR_BF16) != DSV3_OK)
        return -1;
    return 0;
}

static int teardown(void **state) {
    kernels_test_release(&bf16);
    return kernels_fixture_teardown(state);
}

static float *floats(int64_t count) { return test_floats(count); }

static uint64_t rng_state;

static float *random_floats(int64_t count, float scale) {
    float *x = floats(count);
    for (int64_t i = 0; i < count; i++)
        x[i] = kernels_test_uniform(&rng_state, scale);
    return x;
}

static float *rounded_copy(const float *x, int64_t count) {
    float *y = floats(count);
    for (int64_t i = 0; i < count; i++)
        y[i] = dsv3_f32_from_bf16(dsv3_bf16_from_f32(x[i]));
    return y;
}

#define SKIP_WITHOUT_BF16()                                                                        \
    do {                                                                                           \
        if (!bf16_supported()) skip();                                                             \
    } while (0)

// ---- the GEMM ----

typedef struct {
    int64_t M, N, K;
} Shape;

// Sizes around the micro-tile (14 × 32), across the packed blocks (MC 112, NC 1024, KC 256),
// odd K, and large enough that 3 threads split the work.
static const Shape GEMM_SHAPES[] = {
    {1, 1, 1},        {3, 5, 7},      {14, 32, 2},   {15, 33, 3},     {37, 45, 33},
    {113, 1025, 257}, {200, 70, 600}, {64, 192, 64}, {300, 260, 513},
};

// op(X)[r, c] of a row-major X with leading dimension ld.
static double at(const float *x, int64_t ld, int trans, int64_t r, int64_t c) {
    return trans ? x[c * ld + r] : x[r * ld + c];
}

static void test_gemm_matches_rounded_reference(void **state) {
    (void)state;
    SKIP_WITHOUT_BF16();
    rng_state = 11;
    const float alpha = 0.75f, beta = -0.5f;
    for (size_t s = 0; s < sizeof GEMM_SHAPES / sizeof GEMM_SHAPES[0]; s++) {
        const int64_t M = GEMM_SHAPES[s].M, N = GEMM_SHAPES[s].N, K = GEMM_SHAPES[s].K;
        for (int trans = 0; trans < 4; trans++) {
            const int ta = trans & 1, tb = trans >> 1, first = test_buffer_count;
            const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
            float *A = random_floats((ta ? K : M) * lda, 1.0f);
            float *B = random_floats((tb ? N : K) * ldb, 1.0f);
            float *C0 = random_floats(M * ldc, 1.0f);
            const float *Ar = rounded_copy(A, (ta ? K : M) * lda);
            const float *Br = rounded_copy(B, (tb ? N : K) * ldb);
            float *C[2] = {floats(M * ldc), floats(M * ldc)};
            const int threads[2] = {1, 3};
            for (int t = 0; t < 2; t++) {
                memcpy(C[t], C0, (size_t)(M * ldc) * sizeof(float));
                omp_set_num_threads(threads[t]);
                dsv3_cpu_gemm(&bf16, ta ? DSV3_GEMM_TRANS : DSV3_GEMM_NO_TRANS,
                              tb ? DSV3_GEMM_TRANS : DSV3_GEMM_NO_TRANS, M, N, K, alpha, A, lda, B,
                              ldb, beta, C[t], ldc);
            }
            assert_memory_equal(C[0], C[1], (size_t)(M * ldc) * sizeof(float));
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    double sum = 0, magnitude = 0;
                    for (int64_t k = 0; k < K; k++) {
                        const double p = at(Ar, lda, ta, i, k) * at(Br, ldb, tb, k, j);
                        sum += p;
                        magnitude += fabs(p);
                    }
                    const double want = alpha * sum + beta * (double)C0[i * ldc + j];
                    const double bound = 1e-6 * (magnitude + fabs(C0[i * ldc + j])) + 1e-30;
                    if (!(fabs(C[0][i * ldc + j] - want) <= bound))
                        fail_msg("gemm %c%c M=%lld N=%lld K=%lld: C[%lld, %lld] = %.9g, expected "
                                 "%.9g (bound %.3g)",
                                 ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)M, (long long)N,
                                 (long long)K, (long long)i, (long long)j, C[0][i * ldc + j], want,
                                 bound);
                }
            // Columns past N (the leading dimension's padding) are untouched.
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = N; j < ldc; j++)
                    assert_true(C[0][i * ldc + j] == C0[i * ldc + j]);
            test_buffers_free_after(first);
        }
    }
}

static void test_gemm_beta_zero_and_empty_k(void **state) {
    (void)state;
    SKIP_WITHOUT_BF16();
    rng_state = 12;
    const int64_t M = 20, N = 40, K = 9;
    const float *A = random_floats(M * K, 1.0f), *B = random_floats(K * N, 1.0f);
    float *C = floats(M * N);
    for (int64_t i = 0; i < M * N; i++)
        C[i] = NAN;
    dsv3_cpu_gemm(&bf16, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, M, N, K, 1.0f, A, K, B, N, 0.0f, C,
                  N);
    for (int64_t i = 0; i < M * N; i++)
        assert_true(isfinite(C[i])); // beta 0: the NaNs were not read
    for (int64_t i = 0; i < M * N; i++)
        C[i] = 2.0f;
    dsv3_cpu_gemm(&bf16, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, M, N, 0, 1.0f, A, K, B, N, 0.5f, C,
                  N);
    for (int64_t i = 0; i < M * N; i++)
        assert_true(C[i] == 1.0f); // K = 0: C = beta · C
}

// ---- ops ----

static void test_linear_matches_reference_on_rounded_operands(void **state) {
    (void)state;
    SKIP_WITHOUT_BF16();
    rng_state = 13;
    const int64_t N = 75, In = 130, Out = 66;
    const float *x = random_floats(N * In, 1.0f), *w = random_floats(Out * In, 0.2f);
    const float *dout = random_floats(N * Out, 1.0f);
    const float *xr = rounded_copy(x, N * In), *wr = rounded_copy(w, Out * In),
                *doutr = rounded_copy(dout, N * Out);
    float *out = floats(N * Out), *out_ref = floats(N * Out);
    float *dx = floats(N * In), *dx_ref = floats(N * In);
    float *dw = floats(Out * In), *dw_ref = floats(Out * In);
    assert_int_equal(dsv3_linear_forward(&bf16, F32, out, x, w, N, In, Out), DSV3_OK);
    assert_int_equal(dsv3_linear_backward(&bf16, F32, dx, dw, dout, x, w, N, In, Out, 0), DSV3_OK);
    assert_int_equal(dsv3_linear_forward(&reference, F32, out_ref, xr, wr, N, In, Out), DSV3_OK);
    assert_int_equal(
        dsv3_linear_backward(&reference, F32, dx_ref, dw_ref, doutr, xr, wr, N, In, Out, 0),
        DSV3_OK);
    assert_true(kernels_test_relative_error(out, out_ref, N * Out) <= 1e-5);
    assert_true(kernels_test_relative_error(dx, dx_ref, N * In) <= 1e-5);
    assert_true(kernels_test_relative_error(dw, dw_ref, Out * In) <= 1e-5);
}

// bf16 against fp32: close, and not equal.
static void expect_bf16_close(const float *got, const float *want, int64_t count,
                              const char *what) {
    const double err = kernels_test_relative_error(got, want, count);
    if (!(err <= 2e-2 && err > 1e-5))
        fail_msg("%s: bf16 against fp32 relative error %.3e, expected in (1e-5, 2e-2]", what, err);
}

static void test_experts_close_to_fp32(void **state) {
    (void)state;
    SKIP_WITHOUT_BF16();
    rng_state = 14;
    const int64_t E = 3, D = 48, F = 40;
    const int64_t offsets[] = {0, 50, 50, 120};
    const int64_t M = offsets[E];
    const float *xs = random_floats(M * D, 1.0f);
    const float *w1 = random_floats(E * F * D, 0.2f), *w2 = random_floats(E * D * F, 0.2f),
                *w3 = random_floats(E * F * D, 0.2f);
    float *ys[2], *h1[2], *h3[2];
    Dsv3KernelContext *ctx[2] = {&cpu, &bf16};
    for (int i = 0; i < 2; i++) {
        ys[i] = floats(M * D);
        h1[i] = floats(M * F);
        h3[i] = floats(M * F);
        assert_int_equal(
            dsv3_experts_forward(SIZED(ctx[i], EXPERTS_FORWARD, .E = E, .M = M, .F = F), F32, ys[i],
                                 h1[i], h3[i], xs, w1, w2, w3, offsets, E, D, F),
            DSV3_OK);
    }
    expect_bf16_close(ys[1], ys[0], M * D, "experts ys");
    expect_bf16_close(h1[1], h1[0], M * F, "experts h1");
}

static void test_attention_close_to_fp32(void **state) {
    (void)state;
    SKIP_WITHOUT_BF16();
    rng_state = 15;
    const int64_t B = 2, T = 70, H = 3, Dqk = 24, Dv = 16;
    const float *q = random_floats(B * T * H * Dqk, 1.0f),
                *k = random_floats(B * T * H * Dqk, 1.0f);
    const float *v = random_floats(B * T * H * Dv, 1.0f);
    float *out[2], *lse[2];
    Dsv3KernelContext *ctx[2] = {&cpu, &bf16};
    for (int i = 0; i < 2; i++) {
        out[i] = floats(B * T * H * Dv);
        lse[i] = floats(B * H * T);
        assert_int_equal(dsv3_attention_forward(SIZED(ctx[i], ATTENTION_FORWARD, .B = B, .Tq = T,
                                                      .Tk = T, .H = H, .Dqk = Dqk, .Dv = Dv),
                                                F32, out[i], lse[i], NULL, q, k, v, NULL, NULL, B,
                                                T, T, H, Dqk, Dv, 0.2f),
                         DSV3_OK);
    }
    expect_bf16_close(out[1], out[0], B * T * H * Dv, "attention out");
}

static void test_cross_entropy_close_to_fp32(void **state) {
    (void)state;
    SKIP_WITHOUT_BF16();
    rng_state = 16;
    const int64_t N = 40, D = 32, V = 90, chunk = 16;
    const float *h = random_floats(N * D, 1.0f), *w = random_floats(V * D, 0.3f);
    int32_t labels[40];
    for (int64_t n = 0; n < N; n++)
        labels[n] = (int32_t)(kernels_test_rng_next(&rng_state) % (uint64_t)V);
    double loss[2];
    float *dh[2], *dw[2];
    Dsv3KernelContext *ctx[2] = {&cpu, &bf16};
    for (int i = 0; i < 2; i++) {
        dh[i] = floats(N * D);
        dw[i] = floats(V * D);
        assert_int_equal(
            dsv3_cross_entropy(SIZED(ctx[i], CROSS_ENTROPY, .N = N, .D = D, .V = V, .chunk = chunk),
                               F32, &loss[i], dh[i], dw[i], h, w, labels, N, D, V, 1.0f / (float)N,
                               chunk),
            DSV3_OK);
    }
    // The loss is a mean over tokens, where rounding errors cancel: close is all it can show.
    assert_true(fabs(loss[1] - loss[0]) <= 2e-2 * fabs(loss[0]));
    expect_bf16_close(dh[1], dh[0], N * D, "cross-entropy dh");
    expect_bf16_close(dw[1], dw[0], V * D, "cross-entropy dw");
}

// The vocabulary-parallel head (one slice) computes its GEMMs as the fused op does: in bf16 its
// loss and gradients are the fused op's in bf16, not fp32's.
static void test_vocab_parallel_cross_entropy_follows_the_matmul_dtype(void **state) {
    (void)state;
    SKIP_WITHOUT_BF16();
    rng_state = 17;
    const int64_t N = 40, D = 32, V = 90;
    const float *h = random_floats(N * D, 1.0f), *w = random_floats(V * D, 0.3f);
    int32_t labels[40];
    for (int64_t n = 0; n < N; n++)
        labels[n] = n % 5 == 0 ? DSV3_IGNORE_INDEX
                               : (int32_t)(kernels_test_rng_next(&rng_state) % (uint64_t)V);
    const float grad_scale = 1.0f / (float)N;
    double loss_fused[2];
    float *dh_fused[2], *dw_fused[2];
    Dsv3KernelContext *ctx[2] = {&cpu, &bf16};
    for (int i = 0; i < 2; i++) {
        dh_fused[i] = floats(N * D);
        dw_fused[i] = floats(V * D);
        assert_int_equal(
            dsv3_cross_entropy(SIZED(ctx[i], CROSS_ENTROPY, .N = N, .D = D, .V = V, .chunk = N),
                               F32, &loss_fused[i], dh_fused[i], dw_fused[i], h, w, labels, N, D, V,
                               grad_scale, N),
            DSV3_OK);
    }
    float *logits = floats(N * V), *row_max = floats(N), *dh = floats(N * D), *dw = floats(V * D);
    double sums[2 * 40], loss = -1;
    assert_int_equal(dsv3_vocab_logits(&bf16, F32, logits, row_max, h, w, N, D, V), DSV3_OK);
    assert_int_equal(dsv3_vocab_logits_sums(&bf16, sums, logits, row_max, labels, N, V, 0),
                     DSV3_OK);
    assert_int_equal(dsv3_vocab_logits_backward(&bf16, F32, &loss, dh, dw, logits, row_max, sums, h,
                                                w, labels, N, D, V, 0, grad_scale),
                     DSV3_OK);
    assert_true(fabs(loss - loss_fused[1]) <= 1e-6 * fabs(loss_fused[1]));
    assert_true(kernels_test_relative_error(dh, dh_fused[1], N * D) <= 1e-6);
    assert_true(kernels_test_relative_error(dw, dw_fused[1], V * D) <= 1e-6);
    expect_bf16_close(dh, dh_fused[0], N * D, "vocab-parallel dh");
    expect_bf16_close(dw, dw_fused[0], V * D, "vocab-parallel dw");
}

// ---- errors ----

static void expect_usage_error(Dsv3Err got, const char *fragment) {
    assert_int_equal(got, DSV3_ERR_USAGE);
    if (!strstr(dsv3_error_message(), fragment))
        fail_msg("error message '%s' does not mention '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

static void test_set_matmul_errors(void **state) {
    (void)state;
    expect_usage_error(dsv3_kernel_context_set_matmul(&reference, DSV3_TENSOR_BF16),
                       "cpu-reference backend computes GEMMs in fp32 only");
    expect_usage_error(dsv3_kernel_context_set_matmul(&cpu, (Dsv3TensorDtype)7),
                       "neither f32 nor bf16");
    Dsv3KernelContext zeroed = {0};
    expect_usage_error(dsv3_kernel_context_set_matmul(&zeroed, DSV3_TENSOR_BF16),
                       "dsv3_kernel_context_create");
    assert_int_equal(dsv3_kernel_context_set_matmul(&reference, DSV3_TENSOR_F32), DSV3_OK);
    if (!bf16_supported())
        expect_usage_error(dsv3_kernel_context_set_matmul(&cpu, DSV3_TENSOR_BF16), "AVX512-BF16");
    else
        assert_int_equal(bf16.matmul_dtype, DSV3_TENSOR_BF16);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gemm_matches_rounded_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gemm_beta_zero_and_empty_k, setup, teardown),
        cmocka_unit_test_setup_teardown(test_linear_matches_reference_on_rounded_operands, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_experts_close_to_fp32, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attention_close_to_fp32, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_entropy_close_to_fp32, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vocab_parallel_cross_entropy_follows_the_matmul_dtype,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_matmul_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
