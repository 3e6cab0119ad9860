// The CUDA ops built on GEMMs against the reference CPU backend: linear (forward, backward with
// dx written or accumulated, dx only, dweight only), the routed experts, the output head fused
// with cross-entropy, cross-entropy of given logits (also in place), and the vocabulary-parallel
// head (vocab_logits, vocab_logits_sums, vocab_logits_backward, each fed the same inputs on
// both backends). Random inputs of several shapes: size 1, odd sizes, uneven and empty experts,
// uneven and wholly ignored loss chunks, more rows than the row kernels have blocks (70000) and
// more elements than a grid-stride grid covers. Weight gradients start non-zero and their
// increments are compared, so that what they are added onto cannot hide an error. Then the
// data faults (bad labels: reported by dsv3_synchronize naming the op, the row skipped), the
// host argument checks and the workspace query.
//
// Tolerances, as ‖cuda − ref‖ / ‖ref‖ (cuda_test_expect_close):
//   fp32 tensors: 1e-5 (cuBLASLt sums in fp32 where the reference sums in double), except
//   weight gradients summed over more than 10^4 rows (the 70000-row loss cases): 1e-4, as fp32
//   sums of K terms in sequence err by about 2^-24 · sqrt(K) (1.6e-5 at K = 70000).
//   bf16 tensors (inputs rounded to bf16 on the host, so both backends see the same values):
//   - results stored in bf16 straight from one GEMM or sum (linear out and dx, experts h1, h3):
//     1e-2, as one rounding to bf16 costs up to 2^-9 of each element;
//   - fp32 results of GEMMs on bf16 operands (linear dweight, vocab_logits' logits): 1e-4: the
//     products are exact in fp32, the sums fp32, in the tensor cores' order;
//   - the loss of the fused head in bf16: 1e-3 (its logits are such fp32 GEMM results);
//   - results that pass through an intermediate stored in bf16 (the experts' act, dact, dh1,
//     dh3 and their outputs; dlogits rounded to bf16 for the head's dh and dweight GEMMs, then
//     dh stored in bf16): 2e-2.
//   fp32 tensors with the context's GEMMs in bf16 (set_matmul), against the reference on
//   bf16-rounded inputs: 1e-2 (cuBLASLt may round the operands in another way, or sum in
//   another order), and on a shape aligned for the tensor cores they must differ from the plain
//   fp32 result by more than 1e-4 (the operands really were rounded).
//
// Legend: N tokens (rows), In/Out linear features, E experts, D model width, F expert hidden
// width, M routed rows, V vocabulary (or a slice's rows), n tokens of a vocab-parallel chunk.
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tests/cuda/cuda_test.h"

static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32, BF16 = DSV3_TENSOR_BF16;

#define TOL_F32 1e-5
#define TOL_F32_LONG_SUM 1e-4
#define TOL_BF16_STORED 1e-2
#define TOL_BF16_FP32_RESULT 1e-4
#define TOL_BF16_LOSS 1e-3
#define TOL_BF16_CHAINED 2e-2
#define TOL_MATMUL_BF16 1e-2
// Below this the bf16 GEMM of fp32 operands would be indistinguishable from the fp32 one.
#define MATMUL_BF16_MIN_EFFECT 1e-4

// Sums over more terms than this get TOL_F32_LONG_SUM in fp32.
enum { LONG_SUM = 10000 };

static double tol_f32_sum(int64_t terms) { return terms > LONG_SUM ? TOL_F32_LONG_SUM : TOL_F32; }

// The dtypes every op with a `dtype` runs in.
static const Dsv3TensorDtype DTYPES[] = {DSV3_TENSOR_F32, DSV3_TENSOR_BF16};
enum { DTYPE_COUNT = sizeof DTYPES / sizeof DTYPES[0] };

// ---- inputs ----

static uint64_t rng_state;

static float *random_floats(int64_t count, float scale) {
    float *x = test_floats(count);
    for (int64_t i = 0; i < count; i++)
        x[i] = kernels_test_uniform(&rng_state, scale);
    return x;
}

static float *copy_of(const float *src, int64_t count) {
    float *dst = test_floats(count);
    if (count > 0) memcpy(dst, src, (size_t)count * sizeof(float));
    return dst;
}

static int32_t random_index(int64_t bound) {
    return (int32_t)(kernels_test_rng_next(&rng_state) % (uint64_t)bound);
}

// Labels (N) in [0, bound), every `ignore_every`-th one DSV3_IGNORE_INDEX (1: all of them).
static int32_t *random_labels(int64_t N, int64_t bound, int64_t ignore_every) {
    int32_t *labels = test_buffer(N, sizeof(int32_t));
    for (int64_t n = 0; n < N; n++)
        labels[n] = n % ignore_every == ignore_every - 1 ? DSV3_IGNORE_INDEX : random_index(bound);
    return labels;
}

// grad_scale of a mean over the counted labels (1 when none counts).
static float mean_scale(const int32_t *labels, int64_t N) {
    int64_t counted = 0;
    for (int64_t n = 0; n < N; n++)
        counted += labels[n] != DSV3_IGNORE_INDEX;
    return counted > 0 ? 1.0f / (float)counted : 1.0f;
}

static size_t dtype_size(Dsv3TensorDtype dtype) {
    return dtype == DSV3_TENSOR_BF16 ? sizeof(uint16_t) : sizeof(float);
}

// A device copy of x (count) as dtype. For bf16, x is first rounded to bf16 in place, so that
// the reference, which reads x, sees the values the device holds.
static void *upload_rounded(Dsv3TensorDtype dtype, float *x, int64_t count) {
    if (dtype == DSV3_TENSOR_F32) return cuda_test_upload(x, (size_t)count * sizeof(float));
    cuda_test_round_bf16(x, count);
    return cuda_test_upload_bf16(x, count);
}

static float *upload_floats(const float *x, int64_t count) {
    return cuda_test_upload(x, (size_t)count * sizeof(float));
}

// A zeroed device tensor of count elements of dtype.
static void *device_tensor(Dsv3TensorDtype dtype, int64_t count) {
    return cuda_test_device((size_t)count * dtype_size(dtype));
}

// The device tensor (count, of dtype) as host floats.
static float *download_as(Dsv3TensorDtype dtype, const void *device, int64_t count) {
    return dtype == DSV3_TENSOR_BF16 ? cuda_test_download_bf16(device, count)
                                     : cuda_test_download_floats(device, count);
}

static double download_double(const double *device) {
    double x = 0;
    cuda_test_download(&x, device, sizeof x);
    return x;
}

// Frees the buffers and workspaces of one shape before the next (at most
// CUDA_TEST_MAX_DEVICE_BUFFERS device buffers live at once); bf16 GEMMs are off again after.
static void next_shape(void) { (void)cuda_test_teardown_case(NULL); }

// ---- comparisons ----

static const char *dtype_name(Dsv3TensorDtype dtype) {
    return dtype == DSV3_TENSOR_BF16 ? "bf16" : "f32";
}

static void expect_close(const float *got, const float *want, int64_t count, double tolerance,
                         const char *what, const char *shape) {
    char label[256];
    snprintf(label, sizeof label, "%s (%s)", what, shape);
    cuda_test_expect_close(got, want, count, tolerance, label);
}

// The increments of a gradient that started at `start`: got − start against want − start
// (both arrays changed in place).
static void expect_increment_close(float *got, float *want, const float *start, int64_t count,
                                   double tolerance, const char *what, const char *shape) {
    for (int64_t i = 0; i < count; i++) {
        got[i] -= start[i];
        want[i] -= start[i];
    }
    expect_close(got, want, count, tolerance, what, shape);
}

// ‖got − want‖ / ‖want‖ over doubles (absolute when want is all zeros).
static void expect_close_doubles(const double *got, const double *want, int64_t count,
                                 double tolerance, const char *what, const char *shape) {
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < count; i++) {
        diff += (got[i] - want[i]) * (got[i] - want[i]);
        norm += want[i] * want[i];
    }
    const double err = norm == 0 ? sqrt(diff) : sqrt(diff / norm);
    if (!(err <= tolerance))
        fail_msg("%s (%s): relative error %.3e > %.1e (%lld values)", what, shape, err, tolerance,
                 (long long)count);
}

static void expect_usage_error(Dsv3Err got, const char *fragment) {
    if (got != DSV3_ERR_USAGE)
        fail_msg("expected a usage error mentioning '%s', got %d (%s)", fragment, (int)got,
                 dsv3_error_message());
    if (!strstr(dsv3_error_message(), fragment))
        fail_msg("error message '%s' does not mention '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

// ---- linear ----

static void check_linear(Dsv3TensorDtype dtype, int64_t N, int64_t In, int64_t Out) {
    char shape[96];
    snprintf(shape, sizeof shape, "%s N %" PRId64 " In %" PRId64 " Out %" PRId64, dtype_name(dtype),
             N, In, Out);
    const double tol = dtype == F32 ? TOL_F32 : TOL_BF16_STORED;
    const double tol_dweight = dtype == F32 ? TOL_F32 : TOL_BF16_FP32_RESULT;
    float *x = random_floats(N * In, 1), *weight = random_floats(Out * In, 1);
    float *dout = random_floats(N * Out, 1), *dx0 = random_floats(N * In, 1);
    float *dweight0 = random_floats(Out * In, 1);
    void *x_d = upload_rounded(dtype, x, N * In),
         *weight_d = upload_rounded(dtype, weight, Out * In);
    void *dout_d = upload_rounded(dtype, dout, N * Out);
    void *dx_acc_d = upload_rounded(dtype, dx0, N * In);
    void *out_d = device_tensor(dtype, N * Out), *dx_d = device_tensor(dtype, N * In);
    float *dweight_d = upload_floats(dweight0, Out * In);
    float *dweight_only_d = upload_floats(dweight0, Out * In);

    float *out_ref = test_floats(N * Out), *dx_ref = test_floats(N * In);
    float *dx_acc_ref = copy_of(dx0, N * In), *dweight_ref = copy_of(dweight0, Out * In);
    cuda_test_ok(dsv3_linear_forward(&ref_ctx, F32, out_ref, x, weight, N, In, Out));
    cuda_test_ok(
        dsv3_linear_backward(&ref_ctx, F32, dx_ref, dweight_ref, dout, x, weight, N, In, Out, 0));
    cuda_test_ok(
        dsv3_linear_backward(&ref_ctx, F32, dx_acc_ref, NULL, dout, NULL, weight, N, In, Out, 1));

    cuda_test_ok(dsv3_linear_forward(&cuda_ctx, dtype, out_d, x_d, weight_d, N, In, Out));
    cuda_test_ok(dsv3_linear_backward(&cuda_ctx, dtype, dx_d, dweight_d, dout_d, x_d, weight_d, N,
                                      In, Out, 0));
    // The zero-bubble halves: dx only (x may be NULL), added; dweight only (weight may be NULL).
    cuda_test_ok(dsv3_linear_backward(&cuda_ctx, dtype, dx_acc_d, NULL, dout_d, NULL, weight_d, N,
                                      In, Out, 1));
    cuda_test_ok(dsv3_linear_backward(&cuda_ctx, dtype, NULL, dweight_only_d, dout_d, x_d, NULL, N,
                                      In, Out, 0));

    expect_close(download_as(dtype, out_d, N * Out), out_ref, N * Out, tol, "linear out", shape);
    expect_close(download_as(dtype, dx_d, N * In), dx_ref, N * In, tol, "linear dx", shape);
    expect_close(download_as(dtype, dx_acc_d, N * In), dx_acc_ref, N * In, tol,
                 "linear dx accumulated", shape);
    float *dweight_only = cuda_test_download_floats(dweight_only_d, Out * In);
    expect_close(dweight_only, dweight_ref, Out * In, tol_dweight, "linear dweight only", shape);
    expect_increment_close(cuda_test_download_floats(dweight_d, Out * In), dweight_ref, dweight0,
                           Out * In, tol_dweight, "linear dweight increment", shape);
}

static void test_linear_matches_reference(void **state) {
    (void)state;
    static const int64_t SHAPES[][3] = {{1, 1, 1}, {7, 33, 5}, {300, 100, 17}, {517, 130, 300}};
    rng_state = 1;
    for (int t = 0; t < DTYPE_COUNT; t++)
        for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
            check_linear(DTYPES[t], SHAPES[s][0], SHAPES[s][1], SHAPES[s][2]);
            next_shape();
        }
}

// fp32 tensors, the context's GEMMs in bf16: the reference on the bf16-rounded inputs. With
// check_rounding, out must also differ from the fp32 product (a shape whose rows are aligned for
// the tensor cores, where cuBLASLt surely runs a bf16 kernel).
static void check_linear_matmul_bf16(int64_t N, int64_t In, int64_t Out, int check_rounding) {
    char shape[96];
    snprintf(shape, sizeof shape, "matmul bf16 N %" PRId64 " In %" PRId64 " Out %" PRId64, N, In,
             Out);
    float *x = random_floats(N * In, 1), *weight = random_floats(Out * In, 1);
    float *dout = random_floats(N * Out, 1), *dweight0 = random_floats(Out * In, 1);
    float *x_d = upload_floats(x, N * In), *weight_d = upload_floats(weight, Out * In);
    float *dout_d = upload_floats(dout, N * Out), *dweight_d = upload_floats(dweight0, Out * In);
    float *out_d = device_tensor(F32, N * Out), *dx_d = device_tensor(F32, N * In);

    float *out_exact = test_floats(N * Out); // the fp32 product of the unrounded inputs
    cuda_test_ok(dsv3_linear_forward(&ref_ctx, F32, out_exact, x, weight, N, In, Out));
    cuda_test_round_bf16(x, N * In);
    cuda_test_round_bf16(weight, Out * In);
    cuda_test_round_bf16(dout, N * Out);
    float *out_ref = test_floats(N * Out), *dx_ref = test_floats(N * In);
    float *dweight_ref = copy_of(dweight0, Out * In);
    cuda_test_ok(dsv3_linear_forward(&ref_ctx, F32, out_ref, x, weight, N, In, Out));
    cuda_test_ok(
        dsv3_linear_backward(&ref_ctx, F32, dx_ref, dweight_ref, dout, x, weight, N, In, Out, 0));

    cuda_test_ok(dsv3_kernel_context_set_matmul(&cuda_ctx, BF16));
    cuda_test_ok(dsv3_linear_forward(&cuda_ctx, F32, out_d, x_d, weight_d, N, In, Out));
    cuda_test_ok(dsv3_linear_backward(&cuda_ctx, F32, dx_d, dweight_d, dout_d, x_d, weight_d, N, In,
                                      Out, 0));
    float *out = cuda_test_download_floats(out_d, N * Out);
    expect_close(out, out_ref, N * Out, TOL_MATMUL_BF16, "linear out", shape);
    if (check_rounding &&
        !(kernels_test_relative_error(out, out_exact, N * Out) > MATMUL_BF16_MIN_EFFECT))
        fail_msg("linear out (%s): equals the fp32 product, the operands were not rounded", shape);
    expect_close(cuda_test_download_floats(dx_d, N * In), dx_ref, N * In, TOL_MATMUL_BF16,
                 "linear dx", shape);
    expect_increment_close(cuda_test_download_floats(dweight_d, Out * In), dweight_ref, dweight0,
                           Out * In, TOL_MATMUL_BF16, "linear dweight increment", shape);
}

static void test_linear_with_bf16_matmul(void **state) {
    (void)state;
    static const int64_t SHAPES[][4] = {{64, 128, 96, 1}, {300, 100, 17, 0}};
    rng_state = 2;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        check_linear_matmul_bf16(SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], (int)SHAPES[s][3]);
        next_shape();
    }
}

static void test_linear_argument_checks(void **state) {
    (void)state;
    enum { N = 3, In = 4, Out = 5 };
    float *x = device_tensor(F32, N * In), *w = device_tensor(F32, Out * In);
    float *out = device_tensor(F32, N * Out), *dx = device_tensor(F32, N * In);
    float *dw = device_tensor(F32, Out * In);
    expect_usage_error(dsv3_linear_forward(&cuda_ctx, (Dsv3TensorDtype)7, out, x, w, N, In, Out),
                       "dtype 7");
    expect_usage_error(dsv3_linear_forward(&cuda_ctx, F32, out, x, w, -1, In, Out), "N = -1");
    expect_usage_error(dsv3_linear_forward(&cuda_ctx, F32, out, x, w, N, 0, Out), "In = 0");
    expect_usage_error(dsv3_linear_forward(&cuda_ctx, F32, out, x, NULL, N, In, Out),
                       "must not be NULL");
    expect_usage_error(dsv3_linear_backward(&cuda_ctx, F32, NULL, NULL, out, x, w, N, In, Out, 0),
                       "both NULL");
    expect_usage_error(dsv3_linear_backward(&cuda_ctx, F32, dx, dw, out, x, NULL, N, In, Out, 0),
                       "weight must not be NULL when dx is wanted");
    expect_usage_error(dsv3_linear_backward(&cuda_ctx, F32, dx, dw, out, NULL, w, N, In, Out, 0),
                       "x must not be NULL when dweight is wanted");
    expect_usage_error(dsv3_linear_backward(&cuda_ctx, F32, dx, dw, NULL, x, w, N, In, Out, 0),
                       "dout must not be NULL");
    // No rows: nothing to do, whatever the pointers.
    cuda_test_ok(dsv3_linear_forward(&cuda_ctx, F32, NULL, NULL, NULL, 0, In, Out));
    cuda_test_ok(dsv3_linear_backward(&cuda_ctx, F32, NULL, NULL, NULL, NULL, NULL, 0, In, Out, 0));
}

// ---- experts ----

typedef struct {
    int64_t E, D, F;
    const int64_t *rows; // (E) rows of each expert
} ExpertsCase;

static void check_experts(Dsv3TensorDtype dtype, const ExpertsCase *c) {
    const int64_t E = c->E, D = c->D, F = c->F;
    int64_t *offsets = test_buffer(E + 1, sizeof(int64_t));
    for (int64_t e = 0; e < E; e++)
        offsets[e + 1] = offsets[e] + c->rows[e];
    const int64_t M = offsets[E];
    char shape[96];
    snprintf(shape, sizeof shape, "%s E %" PRId64 " D %" PRId64 " F %" PRId64 " M %" PRId64,
             dtype_name(dtype), E, D, F, M);
    const double tol_hidden = dtype == F32 ? TOL_F32 : TOL_BF16_STORED;
    const double tol = dtype == F32 ? TOL_F32 : TOL_BF16_CHAINED;
    const float scale = 1.0f / sqrtf((float)D);
    float *xs = random_floats(M * D, 1), *dys = random_floats(M * D, 1);
    float *w1 = random_floats(E * F * D, scale), *w3 = random_floats(E * F * D, scale);
    float *w2 = random_floats(E * D * F, scale), *g0 = random_floats(E * F * D, 1);
    void *xs_d = upload_rounded(dtype, xs, M * D), *dys_d = upload_rounded(dtype, dys, M * D);
    void *w1_d = upload_rounded(dtype, w1, E * F * D), *w3_d = upload_rounded(dtype, w3, E * F * D);
    void *w2_d = upload_rounded(dtype, w2, E * D * F);
    int64_t *offsets_d = cuda_test_upload(offsets, (size_t)(E + 1) * sizeof(int64_t));
    void *ys_d = device_tensor(dtype, M * D), *dxs_d = device_tensor(dtype, M * D);
    void *h1_d = device_tensor(dtype, M * F), *h3_d = device_tensor(dtype, M * F);
    float *dw1_d = upload_floats(g0, E * F * D), *dw2_d = upload_floats(g0, E * D * F);
    float *dw3_d = upload_floats(g0, E * F * D);

    float *ys_ref = test_floats(M * D), *h1_ref = test_floats(M * F), *h3_ref = test_floats(M * F);
    float *dxs_ref = test_floats(M * D), *dw1_ref = copy_of(g0, E * F * D);
    float *dw2_ref = copy_of(g0, E * D * F), *dw3_ref = copy_of(g0, E * F * D);
#define EXPERTS_SIZED(SIZED_, DIRECTION) SIZED_(EXPERTS_##DIRECTION, .E = E, .D = D, .F = F, .M = M)
    cuda_test_ok(dsv3_experts_forward(EXPERTS_SIZED(REF_SIZED, FORWARD), F32, ys_ref, h1_ref,
                                      h3_ref, xs, w1, w2, w3, offsets, E, D, F));
    cuda_test_ok(dsv3_experts_backward(EXPERTS_SIZED(REF_SIZED, BACKWARD), F32, dxs_ref, dw1_ref,
                                       dw2_ref, dw3_ref, dys, xs, h1_ref, h3_ref, w1, w2, w3,
                                       offsets, E, D, F));
    cuda_test_ok(dsv3_experts_forward(EXPERTS_SIZED(CUDA_SIZED, FORWARD), dtype, ys_d, h1_d, h3_d,
                                      xs_d, w1_d, w2_d, w3_d, offsets_d, E, D, F));
    cuda_test_ok(dsv3_experts_backward(EXPERTS_SIZED(CUDA_SIZED, BACKWARD), dtype, dxs_d, dw1_d,
                                       dw2_d, dw3_d, dys_d, xs_d, h1_d, h3_d, w1_d, w2_d, w3_d,
                                       offsets_d, E, D, F));
#undef EXPERTS_SIZED
    expect_close(download_as(dtype, h1_d, M * F), h1_ref, M * F, tol_hidden, "experts h1", shape);
    expect_close(download_as(dtype, h3_d, M * F), h3_ref, M * F, tol_hidden, "experts h3", shape);
    expect_close(download_as(dtype, ys_d, M * D), ys_ref, M * D, tol, "experts ys", shape);
    expect_close(download_as(dtype, dxs_d, M * D), dxs_ref, M * D, tol, "experts dxs", shape);
    expect_increment_close(cuda_test_download_floats(dw1_d, E * F * D), dw1_ref, g0, E * F * D, tol,
                           "experts dw1 increment", shape);
    expect_increment_close(cuda_test_download_floats(dw2_d, E * D * F), dw2_ref, g0, E * D * F, tol,
                           "experts dw2 increment", shape);
    expect_increment_close(cuda_test_download_floats(dw3_d, E * F * D), dw3_ref, g0, E * F * D, tol,
                           "experts dw3 increment", shape);
}

static void test_experts_match_reference(void **state) {
    (void)state;
    static const int64_t one[] = {1};
    static const int64_t uneven[] = {5, 0, 13, 1}; // an empty expert
    static const int64_t two_busy[] = {0, 40, 0, 0, 37};
    static const int64_t many[] = {9, 3, 0, 17, 25, 1, 0, 8, 12, 4, 30, 2};
    static const int64_t none[] = {0, 0, 0};
    static const int64_t large[] = {1000, 900}; // M × F beyond one grid-stride grid (2^20)
    static const ExpertsCase CASES[] = {
        {1, 1, 1, one},     {1, 7, 5, one},  {4, 17, 23, uneven}, {5, 32, 48, two_busy},
        {12, 24, 40, many}, {3, 8, 8, none}, {2, 64, 600, large},
    };
    // bf16 only where an output element sums enough terms: dxs = dh1 · w1 + dh3 · w3 of a
    // handful of terms may cancel, and the bf16 roundings before it then weigh far more than
    // the tolerance says (fp32 has digits to spare).
    enum { BF16_MIN_TERMS = 64 };
    rng_state = 3;
    for (int t = 0; t < DTYPE_COUNT; t++)
        for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
            if (DTYPES[t] == BF16 && CASES[i].D * CASES[i].F < BF16_MIN_TERMS) continue;
            check_experts(DTYPES[t], &CASES[i]);
            next_shape();
        }
}

static void test_experts_argument_checks(void **state) {
    (void)state;
    enum { E = 2, D = 2, F = 2, ROWS = 3 };
    float *buf = device_tensor(F32, 64);
    const int64_t not_zero[E + 1] = {1, 2, 3}, decreasing[E + 1] = {0, 3, 2};
    const int64_t fine[E + 1] = {0, 1, ROWS};
    int64_t *not_zero_d = cuda_test_upload(not_zero, sizeof not_zero);
    int64_t *decreasing_d = cuda_test_upload(decreasing, sizeof decreasing);
    int64_t *fine_d = cuda_test_upload(fine, sizeof fine);
#define BAD CUDA_SIZED(EXPERTS_BACKWARD, .E = E, .D = D, .F = F, .M = ROWS)
    expect_usage_error(
        dsv3_experts_forward(BAD, F32, buf, buf, buf, buf, buf, buf, buf, not_zero_d, E, D, F),
        "offsets[0] = 1");
    expect_usage_error(
        dsv3_experts_forward(BAD, F32, buf, buf, buf, buf, buf, buf, buf, decreasing_d, E, D, F),
        "offsets[2] = 2 < offsets[1] = 3");
    expect_usage_error(dsv3_experts_backward(BAD, F32, buf, buf, buf, buf, buf, buf, buf, buf, buf,
                                             buf, buf, decreasing_d, E, D, F),
                       "non-decreasing");
    expect_usage_error(dsv3_experts_backward(BAD, F32, buf, buf, buf, buf, buf, buf, buf, buf, buf,
                                             buf, buf, fine_d, E, 0, F),
                       "D = 0");
    expect_usage_error(
        dsv3_experts_forward(BAD, F32, buf, buf, buf, buf, buf, buf, buf, NULL, E, D, F),
        "offsets is NULL");
    expect_usage_error(
        dsv3_experts_forward(BAD, F32, buf, buf, buf, buf, buf, buf, buf, fine_d, 257, D, F),
        "at most 256");
    expect_usage_error(dsv3_experts_forward(BAD, (Dsv3TensorDtype)3, buf, buf, buf, buf, buf, buf,
                                            buf, fine_d, E, D, F),
                       "dtype 3");
    expect_usage_error(
        dsv3_experts_forward(BAD, F32, NULL, buf, buf, buf, buf, buf, buf, fine_d, E, D, F),
        "must not be NULL");
#undef BAD
    kernels_test_free_workspace(&cuda_ctx);
    expect_usage_error(dsv3_experts_backward(&cuda_ctx, F32, buf, buf, buf, buf, buf, buf, buf, buf,
                                             buf, buf, buf, fine_d, E, D, F),
                       "experts_backward: needs");
    // Every expert empty: nothing to do, no workspace needed.
    const int64_t empty[E + 1] = {0, 0, 0};
    int64_t *empty_d = cuda_test_upload(empty, sizeof empty);
    cuda_test_ok(dsv3_experts_forward(&cuda_ctx, F32, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                      empty_d, E, D, F));
}

// ---- cross_entropy ----

typedef struct {
    int64_t N, D, V, chunk, ignore_every;
} CrossEntropyCase;

static void check_cross_entropy(Dsv3TensorDtype dtype, const CrossEntropyCase *c) {
    const int64_t N = c->N, D = c->D, V = c->V, chunk = c->chunk;
    char shape[128];
    snprintf(shape, sizeof shape,
             "%s N %" PRId64 " D %" PRId64 " V %" PRId64 " chunk %" PRId64 " ignore every %" PRId64,
             dtype_name(dtype), N, D, V, chunk, c->ignore_every);
    const double tol_loss = dtype == F32 ? TOL_F32 : TOL_BF16_LOSS;
    const double tol_grad = dtype == F32 ? TOL_F32 : TOL_BF16_CHAINED;
    float *h = random_floats(N * D, 1), *weight = random_floats(V * D, 1);
    int32_t *labels = random_labels(N, V, c->ignore_every);
    const float grad_scale = mean_scale(labels, N);
    // Of the increments' size (about grad_scale), so that the fp32 sum keeps their digits.
    float *dweight0 = random_floats(V * D, grad_scale);
    void *h_d = upload_rounded(dtype, h, N * D), *weight_d = upload_rounded(dtype, weight, V * D);
    int32_t *labels_d = cuda_test_upload(labels, (size_t)N * sizeof(int32_t));
    void *dh_d = device_tensor(dtype, N * D);
    float *dweight_d = upload_floats(dweight0, V * D);
    double *loss_d = cuda_test_device(sizeof(double)),
           *loss_only_d = cuda_test_device(sizeof(double));

    double loss_ref = 0;
    float *dh_ref = test_floats(N * D), *dweight_ref = copy_of(dweight0, V * D);
    cuda_test_ok(dsv3_cross_entropy(
        REF_SIZED(CROSS_ENTROPY, .N = N, .D = D, .V = V, .chunk = chunk), F32, &loss_ref, dh_ref,
        dweight_ref, h, weight, labels, N, D, V, grad_scale, chunk));
    const Dsv3KernelContext *sized =
        CUDA_SIZED(CROSS_ENTROPY, .N = N, .D = D, .V = V, .chunk = chunk);
    cuda_test_ok(dsv3_cross_entropy(sized, dtype, loss_d, dh_d, dweight_d, h_d, weight_d, labels_d,
                                    N, D, V, grad_scale, chunk));
    cuda_test_ok(dsv3_cross_entropy(sized, dtype, loss_only_d, NULL, NULL, h_d, weight_d, labels_d,
                                    N, D, V, grad_scale, chunk));

    const double loss = download_double(loss_d), loss_only = download_double(loss_only_d);
    expect_close_doubles(&loss, &loss_ref, 1, tol_loss, "cross_entropy loss", shape);
    expect_close_doubles(&loss_only, &loss_ref, 1, tol_loss, "cross_entropy loss without dh",
                         shape);
    expect_close(download_as(dtype, dh_d, N * D), dh_ref, N * D, tol_grad, "cross_entropy dh",
                 shape);
    expect_increment_close(cuda_test_download_floats(dweight_d, V * D), dweight_ref, dweight0,
                           V * D, dtype == F32 ? tol_f32_sum(N) : tol_grad,
                           "cross_entropy dweight increment", shape);
}

static void test_cross_entropy_matches_reference(void **state) {
    (void)state;
    static const CrossEntropyCase CASES[] = {
        {1, 1, 1, 1, 4},         {7, 33, 50, 3, 4},     {5, 8, 9, 2, 1}, // all ignored
        {300, 64, 1000, 128, 4}, {64, 32, 5000, 64, 5},                  // rows longer than a block
        {70000, 2, 3, 70000, 4}, // more rows than the row kernel's blocks
    };
    rng_state = 4;
    for (int t = 0; t < DTYPE_COUNT; t++)
        for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
            check_cross_entropy(DTYPES[t], &CASES[i]);
            next_shape();
        }
}

// cross_entropy_logits: into a separate dlogits, in place, and the loss alone.
static void check_cross_entropy_logits(int64_t N, int64_t V, int64_t ignore_every) {
    char shape[96];
    snprintf(shape, sizeof shape, "N %" PRId64 " V %" PRId64 " ignore every %" PRId64, N, V,
             ignore_every);
    float *logits = random_floats(N * V, 4);
    int32_t *labels = random_labels(N, V, ignore_every);
    const float grad_scale = mean_scale(labels, N);
    float *logits_d = upload_floats(logits, N * V), *in_place_d = upload_floats(logits, N * V);
    float *dlogits_d = device_tensor(F32, N * V);
    int32_t *labels_d = cuda_test_upload(labels, (size_t)N * sizeof(int32_t));
    double *loss_d = cuda_test_device(sizeof(double)), *loss_in_place_d = cuda_test_device(8);
    double *loss_only_d = cuda_test_device(sizeof(double));

    double loss_ref = 0;
    float *dlogits_ref = test_floats(N * V);
    cuda_test_ok(dsv3_cross_entropy_logits(REF_SIZED(CROSS_ENTROPY_LOGITS, .N = N, .V = V), F32,
                                           &loss_ref, dlogits_ref, logits, labels, N, V,
                                           grad_scale));
    const Dsv3KernelContext *sized = CUDA_SIZED(CROSS_ENTROPY_LOGITS, .N = N, .V = V);
    cuda_test_ok(dsv3_cross_entropy_logits(sized, F32, loss_d, dlogits_d, logits_d, labels_d, N, V,
                                           grad_scale));
    cuda_test_ok(dsv3_cross_entropy_logits(sized, F32, loss_in_place_d, in_place_d, in_place_d,
                                           labels_d, N, V, grad_scale));
    cuda_test_ok(dsv3_cross_entropy_logits(sized, F32, loss_only_d, NULL, logits_d, labels_d, N, V,
                                           grad_scale));

    const double loss = download_double(loss_d), loss_in_place = download_double(loss_in_place_d);
    const double loss_only = download_double(loss_only_d);
    expect_close_doubles(&loss, &loss_ref, 1, TOL_F32, "cross_entropy_logits loss", shape);
    expect_close_doubles(&loss_in_place, &loss_ref, 1, TOL_F32,
                         "cross_entropy_logits loss in place", shape);
    expect_close_doubles(&loss_only, &loss_ref, 1, TOL_F32, "cross_entropy_logits loss alone",
                         shape);
    expect_close(cuda_test_download_floats(dlogits_d, N * V), dlogits_ref, N * V, TOL_F32,
                 "cross_entropy_logits dlogits", shape);
    expect_close(cuda_test_download_floats(in_place_d, N * V), dlogits_ref, N * V, TOL_F32,
                 "cross_entropy_logits dlogits in place", shape);
    float *untouched = cuda_test_download_floats(logits_d, N * V); // without dlogits
    assert_memory_equal(untouched, logits, (size_t)(N * V) * sizeof(float));
}

static void test_cross_entropy_logits_matches_reference(void **state) {
    (void)state;
    static const int64_t CASES[][3] = {
        {1, 1, 4}, {5, 7, 3}, {4, 9, 1}, {33, 3000, 4}, {70000, 3, 5},
    };
    rng_state = 5;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        check_cross_entropy_logits(CASES[i][0], CASES[i][1], CASES[i][2]);
        next_shape();
    }
}

// ---- vocabulary-parallel cross-entropy ----

typedef struct {
    int64_t n, D, V, vocab_start;
} VocabCase;

// The three ops on one slice, each given the same inputs on both backends: the reference's
// logits and row maxima (raised, as another rank's larger maximum would), and its sums (with
// other ranks' share added).
static void check_vocab_parallel(Dsv3TensorDtype dtype, const VocabCase *c) {
    const int64_t n = c->n, D = c->D, V = c->V, v0 = c->vocab_start;
    char shape[128];
    snprintf(shape, sizeof shape,
             "%s n %" PRId64 " D %" PRId64 " V %" PRId64 " vocab_start %" PRId64, dtype_name(dtype),
             n, D, V, v0);
    const double tol_logits = dtype == F32 ? TOL_F32 : TOL_BF16_FP32_RESULT;
    const double tol_grad = dtype == F32 ? TOL_F32 : TOL_BF16_CHAINED;
    enum { OTHER_RANKS_ROWS = 7 };
    const float other_max = 0.25f; // what another rank's larger maximum adds
    const double other_sum = 0.5;  // what the other ranks' rows add to each row's sum
    float *h = random_floats(n * D, 1), *weight = random_floats(V * D, 1);
    // Labels in the slice, before it, after it, and ignored.
    int32_t *labels = random_labels(n, v0 + V + OTHER_RANKS_ROWS, 4);
    const float grad_scale = mean_scale(labels, n);
    // Of the increments' size (about grad_scale), so that the fp32 sum keeps their digits.
    float *dweight0 = random_floats(V * D, grad_scale);
    void *h_d = upload_rounded(dtype, h, n * D), *weight_d = upload_rounded(dtype, weight, V * D);
    int32_t *labels_d = cuda_test_upload(labels, (size_t)n * sizeof(int32_t));

    // vocab_logits
    float *logits_ref = test_floats(n * V), *row_max_ref = test_floats(n);
    cuda_test_ok(dsv3_vocab_logits(&ref_ctx, F32, logits_ref, row_max_ref, h, weight, n, D, V));
    float *logits_d = device_tensor(F32, n * V), *row_max_d = device_tensor(F32, n);
    cuda_test_ok(dsv3_vocab_logits(&cuda_ctx, dtype, logits_d, row_max_d, h_d, weight_d, n, D, V));
    expect_close(cuda_test_download_floats(logits_d, n * V), logits_ref, n * V, tol_logits,
                 "vocab_logits logits", shape);
    expect_close(cuda_test_download_floats(row_max_d, n), row_max_ref, n, tol_logits,
                 "vocab_logits row_max", shape);

    // vocab_logits_sums, from the reference's logits and a larger global maximum
    for (int64_t i = 0; i < n; i++)
        row_max_ref[i] += other_max;
    float *logits_in_d = upload_floats(logits_ref, n * V),
          *row_max_in_d = upload_floats(row_max_ref, n);
    double *sums_ref = test_buffer(2 * n, sizeof(double)),
           *sums = test_buffer(2 * n, sizeof(double));
    double *sums_d = cuda_test_device((size_t)(2 * n) * sizeof(double));
    cuda_test_ok(
        dsv3_vocab_logits_sums(&ref_ctx, sums_ref, logits_ref, row_max_ref, labels, n, V, v0));
    cuda_test_ok(
        dsv3_vocab_logits_sums(&cuda_ctx, sums_d, logits_in_d, row_max_in_d, labels_d, n, V, v0));
    cuda_test_download(sums, sums_d, (size_t)(2 * n) * sizeof(double));
    expect_close_doubles(sums, sums_ref, 2 * n, TOL_F32, "vocab_logits_sums sums", shape);

    // vocab_logits_backward, from the reference's sums plus the other ranks' share
    for (int64_t i = 0; i < n; i++)
        sums_ref[i] += other_sum;
    double *sums_in_d = cuda_test_upload(sums_ref, (size_t)(2 * n) * sizeof(double));
    double loss_ref = 0, loss_only_ref = 0;
    float *dh_ref = test_floats(n * D), *dweight_ref = copy_of(dweight0, V * D);
    float *dlogits_ref = copy_of(logits_ref, n * V);
    cuda_test_ok(dsv3_vocab_logits_backward(&ref_ctx, F32, &loss_only_ref, NULL, NULL, NULL,
                                            row_max_ref, sums_ref, NULL, NULL, labels, n, D, V, v0,
                                            grad_scale));
    cuda_test_ok(dsv3_vocab_logits_backward(&ref_ctx, F32, &loss_ref, dh_ref, dweight_ref,
                                            dlogits_ref, row_max_ref, sums_ref, h, weight, labels,
                                            n, D, V, v0, grad_scale));
    const Dsv3KernelContext *sized = CUDA_SIZED(VOCAB_LOGITS_BACKWARD, .N = n, .V = V);
    double *loss_d = cuda_test_device(sizeof(double)), *loss_only_d = cuda_test_device(8);
    void *dh_d = device_tensor(dtype, n * D);
    float *dweight_d = upload_floats(dweight0, V * D);
    // Without dh: the loss only; the logits and dweight are not touched.
    cuda_test_ok(dsv3_vocab_logits_backward(sized, dtype, loss_only_d, NULL, dweight_d, logits_in_d,
                                            row_max_in_d, sums_in_d, h_d, weight_d, labels_d, n, D,
                                            V, v0, grad_scale));
    float *untouched = cuda_test_download_floats(logits_in_d, n * V);
    assert_memory_equal(untouched, logits_ref, (size_t)(n * V) * sizeof(float));
    untouched = cuda_test_download_floats(dweight_d, V * D);
    assert_memory_equal(untouched, dweight0, (size_t)(V * D) * sizeof(float));
    cuda_test_ok(dsv3_vocab_logits_backward(sized, dtype, loss_d, dh_d, dweight_d, logits_in_d,
                                            row_max_in_d, sums_in_d, h_d, weight_d, labels_d, n, D,
                                            V, v0, grad_scale));
    const double loss = download_double(loss_d), loss_only = download_double(loss_only_d);
    expect_close_doubles(&loss, &loss_ref, 1, TOL_F32, "vocab_logits_backward loss", shape);
    expect_close_doubles(&loss_only, &loss_only_ref, 1, TOL_F32,
                         "vocab_logits_backward loss without dh", shape);
    expect_close(cuda_test_download_floats(logits_in_d, n * V), dlogits_ref, n * V, TOL_F32,
                 "vocab_logits_backward dlogits", shape);
    expect_close(download_as(dtype, dh_d, n * D), dh_ref, n * D, tol_grad,
                 "vocab_logits_backward dh", shape);
    expect_increment_close(cuda_test_download_floats(dweight_d, V * D), dweight_ref, dweight0,
                           V * D, dtype == F32 ? tol_f32_sum(n) : tol_grad,
                           "vocab_logits_backward dweight increment", shape);
}

static void test_vocab_parallel_matches_reference(void **state) {
    (void)state;
    static const VocabCase CASES[] = {
        {1, 1, 1, 0},
        {7, 33, 50, 20},
        {130, 64, 3000, 1000},
        {70000, 2, 3, 4},
    };
    rng_state = 6;
    for (int t = 0; t < DTYPE_COUNT; t++)
        for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
            check_vocab_parallel(DTYPES[t], &CASES[i]);
            next_shape();
        }
}

// ---- data faults and argument checks ----

// A bad label is reported by the next synchronisation, naming the op, the position and the
// value; its row is skipped: the results are those of the same labels with it ignored.
static void test_bad_labels_are_data_faults(void **state) {
    (void)state;
    enum { N = 6, D = 4, V = 5, CHUNK = 4 };
    rng_state = 7;
    float *h = random_floats(N * D, 1), *weight = random_floats(V * D, 1);
    const int32_t bad[N] = {0, 1, DSV3_IGNORE_INDEX, V + 2, 2, 4};
    const int32_t skipped[N] = {0, 1, DSV3_IGNORE_INDEX, DSV3_IGNORE_INDEX, 2, 4};
    float *h_d = upload_floats(h, N * D), *weight_d = upload_floats(weight, V * D);
    int32_t *bad_d = cuda_test_upload(bad, sizeof bad);
    float *dh_d = device_tensor(F32, N * D), *dweight_d = device_tensor(F32, V * D);
    double *loss_d = cuda_test_device(sizeof(double));
    cuda_test_ok(
        dsv3_cross_entropy(CUDA_SIZED(CROSS_ENTROPY, .N = N, .D = D, .V = V, .chunk = CHUNK), F32,
                           loss_d, dh_d, dweight_d, h_d, weight_d, bad_d, N, D, V, 1.0f, CHUNK));
    expect_usage_error(dsv3_synchronize(&cuda_ctx),
                       "cross_entropy: element 3 of its input holds 7");
    cuda_test_ok(dsv3_synchronize(&cuda_ctx)); // reported once
    double loss_ref = 0;
    float *dh_ref = test_floats(N * D), *dweight_ref = test_floats(V * D);
    cuda_test_ok(dsv3_cross_entropy(
        REF_SIZED(CROSS_ENTROPY, .N = N, .D = D, .V = V, .chunk = CHUNK), F32, &loss_ref, dh_ref,
        dweight_ref, h, weight, skipped, N, D, V, 1.0f, CHUNK));
    const double loss = download_double(loss_d);
    expect_close_doubles(&loss, &loss_ref, 1, TOL_F32, "cross_entropy loss, row skipped", "fault");
    expect_close(cuda_test_download_floats(dh_d, N * D), dh_ref, N * D, TOL_F32,
                 "cross_entropy dh, row skipped", "fault");
    expect_close(cuda_test_download_floats(dweight_d, V * D), dweight_ref, V * D, TOL_F32,
                 "cross_entropy dweight, row skipped", "fault");

    // cross_entropy_logits: a negative label that is not the ignore index.
    const int32_t bad_logits[N] = {0, -5, 1, 2, 3, 4};
    int32_t *bad_logits_d = cuda_test_upload(bad_logits, sizeof bad_logits);
    float *logits_d = upload_floats(random_floats(N * V, 4), N * V);
    cuda_test_ok(dsv3_cross_entropy_logits(CUDA_SIZED(CROSS_ENTROPY_LOGITS, .N = N, .V = V), F32,
                                           loss_d, NULL, logits_d, bad_logits_d, N, V, 1.0f));
    expect_usage_error(dsv3_synchronize(&cuda_ctx),
                       "cross_entropy_logits: element 1 of its input holds -5");

    // The vocabulary-parallel ops: labels must be token ids (>= 0) or the ignore index.
    const int32_t bad_vocab[N] = {0, 1, -7, 3, DSV3_IGNORE_INDEX, 9};
    int32_t *bad_vocab_d = cuda_test_upload(bad_vocab, sizeof bad_vocab);
    float *row_max_d = device_tensor(F32, N);
    double *sums_d = cuda_test_device(2 * N * sizeof(double));
    cuda_test_ok(dsv3_vocab_logits(&cuda_ctx, F32, logits_d, row_max_d, h_d, weight_d, N, D, V));
    cuda_test_ok(
        dsv3_vocab_logits_sums(&cuda_ctx, sums_d, logits_d, row_max_d, bad_vocab_d, N, V, 0));
    expect_usage_error(dsv3_synchronize(&cuda_ctx),
                       "vocab_logits_sums: element 2 of its input holds -7");
    cuda_test_ok(dsv3_vocab_logits_backward(&cuda_ctx, F32, loss_d, NULL, NULL, NULL, row_max_d,
                                            sums_d, NULL, NULL, bad_vocab_d, N, D, V, 0, 1.0f));
    expect_usage_error(dsv3_synchronize(&cuda_ctx),
                       "vocab_logits_backward: element 2 of its input holds -7");
}

static void test_cross_entropy_argument_checks(void **state) {
    (void)state;
    enum { N = 3, D = 4, V = 5, CHUNK = 2 };
    float *h = device_tensor(F32, N * D), *w = device_tensor(F32, V * D);
    float *dh = device_tensor(F32, N * D), *dw = device_tensor(F32, V * D);
    int32_t *labels = cuda_test_device(N * sizeof(int32_t));
    double *loss = cuda_test_device(sizeof(double));
    const Dsv3KernelContext *sized =
        CUDA_SIZED(CROSS_ENTROPY, .N = N, .D = D, .V = V, .chunk = CHUNK);
    expect_usage_error(dsv3_cross_entropy(sized, F32, loss, dh, dw, h, w, labels, N, D, V, 1, 0),
                       "chunk = 0");
    expect_usage_error(
        dsv3_cross_entropy(sized, F32, NULL, dh, dw, h, w, labels, N, D, V, 1, CHUNK),
        "loss_sum is NULL");
    expect_usage_error(
        dsv3_cross_entropy(sized, F32, loss, dh, NULL, h, w, labels, N, D, V, 1, CHUNK),
        "dweight must not be NULL when dh is wanted");
    expect_usage_error(
        dsv3_cross_entropy(sized, F32, loss, dh, dw, h, w, labels, N, D, 0, 1, CHUNK), "V = 0");
    expect_usage_error(dsv3_cross_entropy(sized, F32, loss, dh, dw, h, w, NULL, N, D, V, 1, CHUNK),
                       "must not be NULL");
    expect_usage_error(dsv3_cross_entropy(sized, (Dsv3TensorDtype)9, loss, dh, dw, h, w, labels, N,
                                          D, V, 1, CHUNK),
                       "dtype 9");
    expect_usage_error(dsv3_cross_entropy_logits(&cuda_ctx, F32, loss, dh, h, labels, N, 0, 1),
                       "V = 0");
    expect_usage_error(dsv3_cross_entropy_logits(&cuda_ctx, F32, NULL, dh, h, labels, N, V, 1),
                       "loss_sum is NULL");
    kernels_test_free_workspace(&cuda_ctx);
    expect_usage_error(
        dsv3_cross_entropy(&cuda_ctx, F32, loss, dh, dw, h, w, labels, N, D, V, 1, CHUNK),
        "cross_entropy: needs");
    expect_usage_error(dsv3_cross_entropy_logits(&cuda_ctx, F32, loss, dh, h, labels, N, V, 1),
                       "cross_entropy_logits: needs");
    // No tokens: a zero loss is written.
    const double nonzero = 3.0;
    cuda_test_ok(
        dsv3_memory_copy(&cuda_ctx, loss, &nonzero, sizeof nonzero, DSV3_COPY_HOST_TO_DEVICE));
    cuda_test_ok(
        dsv3_cross_entropy(&cuda_ctx, F32, loss, NULL, NULL, NULL, NULL, NULL, 0, D, V, 1, CHUNK));
    assert_true(download_double(loss) == 0.0);
}

static void test_vocab_parallel_argument_checks(void **state) {
    (void)state;
    enum { n = 3, D = 4, V = 5 };
    float *h = device_tensor(F32, n * D), *w = device_tensor(F32, V * D);
    float *logits = device_tensor(F32, n * V), *row_max = device_tensor(F32, n);
    float *dh = device_tensor(BF16, n * D), *dw = device_tensor(F32, V * D);
    int32_t *labels = cuda_test_device(n * sizeof(int32_t));
    double *sums = cuda_test_device(2 * n * sizeof(double)), *loss = cuda_test_device(8);
    expect_usage_error(dsv3_vocab_logits(&cuda_ctx, F32, logits, row_max, h, w, -1, D, V),
                       "n = -1");
    expect_usage_error(dsv3_vocab_logits(&cuda_ctx, F32, logits, NULL, h, w, n, D, V),
                       "must not be NULL");
    expect_usage_error(dsv3_vocab_logits_sums(&cuda_ctx, sums, logits, row_max, labels, n, V, -1),
                       "vocab_start = -1");
    expect_usage_error(dsv3_vocab_logits_sums(&cuda_ctx, sums, logits, row_max, labels, n, V,
                                              ((int64_t)1 << 31) - V + 1),
                       "vocab_start + V <= 2^31");
    expect_usage_error(dsv3_vocab_logits_backward(&cuda_ctx, F32, loss, dh, NULL, logits, row_max,
                                                  sums, h, w, labels, n, D, V, 0, 1),
                       "must not be NULL when dh is wanted");
    expect_usage_error(dsv3_vocab_logits_backward(&cuda_ctx, F32, NULL, NULL, NULL, NULL, row_max,
                                                  sums, NULL, NULL, labels, n, D, V, 0, 1),
                       "loss_sum is NULL");
    // bf16 gradients need the workspace of their bf16 copy; fp32 ones none.
    kernels_test_free_workspace(&cuda_ctx);
    expect_usage_error(dsv3_vocab_logits_backward(&cuda_ctx, BF16, loss, dh, dw, logits, row_max,
                                                  sums, h, w, labels, n, D, V, 0, 1),
                       "vocab_logits_backward: needs");
    cuda_test_ok(dsv3_synchronize(&cuda_ctx));
}

static void test_workspace_query(void **state) {
    (void)state;
    size_t bytes = 1;
    const Dsv3OpShape linear = {.N = 1000};
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_LINEAR_BACKWARD, &linear, &bytes));
    assert_int_equal(bytes, 0);
    const Dsv3OpShape experts = {.E = 4, .D = 8, .F = 16, .M = 100};
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_EXPERTS_BACKWARD, &experts, &bytes));
    assert_true(bytes >= 2 * 100 * 16 * sizeof(float));
    const Dsv3OpShape no_rows = {.E = 4, .D = 8, .F = 16, .M = 0};
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_EXPERTS_FORWARD, &no_rows, &bytes));
    assert_int_equal(bytes, 0);
    const Dsv3OpShape head = {.N = 100, .D = 8, .V = 1000, .chunk = 30};
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_CROSS_ENTROPY, &head, &bytes));
    assert_true(bytes >= 30 * 1000 * (sizeof(float) + sizeof(uint16_t)) + 100 * sizeof(double));
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_VOCAB_LOGITS, &head, &bytes));
    assert_int_equal(bytes, 0);
    const Dsv3OpShape huge = {.N = (int64_t)1 << 40, .V = (int64_t)1 << 40, .chunk = 1 << 30};
    expect_usage_error(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_CROSS_ENTROPY, &huge, &bytes),
                       "does not fit");
}

static const struct CMUnitTest cases[] = {
    CUDA_TEST(test_linear_matches_reference),
    CUDA_TEST(test_linear_with_bf16_matmul),
    CUDA_TEST(test_linear_argument_checks),
    CUDA_TEST(test_experts_match_reference),
    CUDA_TEST(test_experts_argument_checks),
    CUDA_TEST(test_cross_entropy_matches_reference),
    CUDA_TEST(test_cross_entropy_logits_matches_reference),
    CUDA_TEST(test_vocab_parallel_matches_reference),
    CUDA_TEST(test_bad_labels_are_data_faults),
    CUDA_TEST(test_cross_entropy_argument_checks),
    CUDA_TEST(test_vocab_parallel_argument_checks),
    CUDA_TEST(test_workspace_query),
};

CUDA_TEST_MAIN(cases)
