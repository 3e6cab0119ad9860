// Numerics of the dense ops against PyTorch in float64 (tests/reference/ops_dense.py):
// embedding, RMSNorm, linear, SwiGLU, the output head fused with cross-entropy, AdamW over
// several steps, and clipping by the global gradient norm built from dsv3_sum_squares and
// dsv3_scale.
//
// Usage: test_ops_dense CASE_DIR. Both the reference and the fast version of every op run in
// float32 on the same inputs; each output and gradient must be within TOLERANCE relative error
// (‖got − expected‖ / ‖expected‖) of the float64 expectation. Prints one line per check and
// exits non-zero when any check fails.
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "kernels/kernels.h"
#include "kernels/kernels_reference.h"
#include "npy.h"

#define TOLERANCE 1e-4

enum { NAME_CAPACITY = 256, MAX_BUFFERS = 64, MAX_CLIP_TENSORS = 8, MAX_ADAMW_STEPS = 16 };

// Both versions of every op, so that each case runs them the same way.
typedef struct {
    const char *name;
    Dsv3Err (*embedding_forward)(float *, const int32_t *, const float *, int64_t, int64_t,
                                 int64_t);
    Dsv3Err (*embedding_backward)(float *, const float *, const int32_t *, int64_t, int64_t,
                                  int64_t);
    Dsv3Err (*rmsnorm_forward)(float *, float *, const float *, const float *, int64_t, int64_t,
                               float);
    Dsv3Err (*rmsnorm_backward)(float *, float *, const float *, const float *, const float *,
                                const float *, int64_t, int64_t);
    Dsv3Err (*linear_forward)(float *, const float *, const float *, int64_t, int64_t, int64_t);
    Dsv3Err (*linear_backward)(float *, float *, const float *, const float *, const float *,
                               int64_t, int64_t, int64_t, int);
    Dsv3Err (*swiglu_forward)(float *, const float *, const float *, int64_t, int64_t);
    Dsv3Err (*swiglu_backward)(float *, float *, const float *, const float *, const float *,
                               int64_t, int64_t);
    Dsv3Err (*cross_entropy)(double *, float *, float *, const float *, const float *,
                             const int32_t *, int64_t, int64_t, int64_t, float, int64_t);
    Dsv3Err (*adamw_step)(float *, const float *, float *, float *, int64_t, const Dsv3AdamWArgs *);
    double (*sum_squares)(const float *, int64_t);
    void (*scale)(float *, int64_t, float);
} Impl;

static const Impl IMPLS[] = {
    {"reference", dsv3_embedding_forward_reference, dsv3_embedding_backward_reference,
     dsv3_rmsnorm_forward_reference, dsv3_rmsnorm_backward_reference, dsv3_linear_forward_reference,
     dsv3_linear_backward_reference, dsv3_swiglu_forward_reference, dsv3_swiglu_backward_reference,
     dsv3_cross_entropy_reference, dsv3_adamw_step_reference, dsv3_sum_squares_reference,
     dsv3_scale_reference},
    {"fast", dsv3_embedding_forward, dsv3_embedding_backward, dsv3_rmsnorm_forward,
     dsv3_rmsnorm_backward, dsv3_linear_forward, dsv3_linear_backward, dsv3_swiglu_forward,
     dsv3_swiglu_backward, dsv3_cross_entropy, dsv3_adamw_step, dsv3_sum_squares, dsv3_scale},
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

static Dsv3Err read_f32(float **out, int64_t *count, const char *case_name, const char *name) {
    char path[NAME_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", case_name, name);
    int64_t n = 0;
    DSV3_CALL(dsv3_npy_read_f32(out, &n, case_root, path));
    DSV3_CALL(keep(*out));
    if (count) *count = n;
    return DSV3_OK;
}

static Dsv3Err read_f64(double **out, int64_t *count, const char *case_name, const char *name) {
    char path[NAME_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", case_name, name);
    int64_t n = 0;
    DSV3_CALL(dsv3_npy_read_f64(out, &n, case_root, path));
    DSV3_CALL(keep(*out));
    if (count) *count = n;
    return DSV3_OK;
}

static Dsv3Err read_i32(int32_t **out, int64_t *count, const char *case_name, const char *name) {
    char path[NAME_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", case_name, name);
    int64_t n = 0;
    DSV3_CALL(dsv3_npy_read_i32(out, &n, case_root, path));
    DSV3_CALL(keep(*out));
    if (count) *count = n;
    return DSV3_OK;
}

// A float32 buffer of `count` elements: a copy of `init` when given, else zeros.
static Dsv3Err make_buffer(float **out, int64_t count, const float *init) {
    DSV3_CALL(dsv3_calloc((void **)out, (size_t)(count > 0 ? count : 1), sizeof(float),
                          "numerics buffer"));
    DSV3_CALL(keep(*out));
    if (init) memcpy(*out, init, (size_t)count * sizeof(float));
    return DSV3_OK;
}

// Reads `expected_name` and compares; prints one line; counts a failure above TOLERANCE.
static Dsv3Err check(const char *case_name, const Impl *impl, const char *what, const float *got,
                     int64_t count, const char *expected_name) {
    double *expected = NULL;
    int64_t expected_count = 0;
    DSV3_CALL(read_f64(&expected, &expected_count, case_name, expected_name));
    DSV3_CHECK(expected_count == count, DSV3_ERR_USAGE,
               "%s/%s has %" PRId64 " elements, the op produced %" PRId64, case_name, expected_name,
               expected_count, count);
    double err = dsv3_npy_relative_error(got, expected, count);
    int ok = err <= TOLERANCE;
    printf("%-9s %-16s %-22s rel err %.3e  %s\n", impl->name, case_name, what, err,
           ok ? "ok" : "FAIL");
    failures += !ok;
    return DSV3_OK;
}

// Same for one double (the loss, the norm).
static void check_scalar(const char *case_name, const Impl *impl, const char *what, double got,
                         double expected) {
    double err = expected == 0 ? fabs(got) : fabs(got - expected) / fabs(expected);
    int ok = err <= TOLERANCE;
    printf("%-9s %-16s %-22s rel err %.3e  %s\n", impl->name, case_name, what, err,
           ok ? "ok" : "FAIL");
    failures += !ok;
}

static Dsv3Err test_embedding(const Impl *impl) {
    const char *c = "embedding";
    int32_t *dims = NULL, *tokens = NULL;
    float *weight = NULL, *dout = NULL, *dweight0 = NULL, *out = NULL, *dweight = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    const int64_t N = dims[0], D = dims[1], V = dims[2];
    DSV3_CALL(read_i32(&tokens, NULL, c, "tokens"));
    DSV3_CALL(read_f32(&weight, NULL, c, "weight"));     // (V, D)
    DSV3_CALL(read_f32(&dout, NULL, c, "dout"));         // (N, D)
    DSV3_CALL(read_f32(&dweight0, NULL, c, "dweight0")); // (V, D)
    DSV3_CALL(make_buffer(&out, N * D, NULL));           // (N, D)
    DSV3_CALL(make_buffer(&dweight, V * D, dweight0));   // (V, D)
    DSV3_CALL(impl->embedding_forward(out, tokens, weight, N, D, V));
    DSV3_CALL(impl->embedding_backward(dweight, dout, tokens, N, D, V));
    DSV3_CALL(check(c, impl, "out", out, N * D, "out"));
    DSV3_CALL(check(c, impl, "dweight (added)", dweight, V * D, "dweight"));
    return DSV3_OK;
}

static Dsv3Err test_rmsnorm(const Impl *impl) {
    const char *c = "rmsnorm";
    int32_t *dims = NULL;
    double *params = NULL;
    float *x = NULL, *weight = NULL, *dout = NULL, *dweight0 = NULL;
    float *out = NULL, *rstd = NULL, *dx = NULL, *dweight = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    DSV3_CALL(read_f64(&params, NULL, c, "params"));
    const int64_t N = dims[0], D = dims[1];
    const float eps = (float)params[0];
    DSV3_CALL(read_f32(&x, NULL, c, "x"));               // (N, D)
    DSV3_CALL(read_f32(&weight, NULL, c, "weight"));     // (D)
    DSV3_CALL(read_f32(&dout, NULL, c, "dout"));         // (N, D)
    DSV3_CALL(read_f32(&dweight0, NULL, c, "dweight0")); // (D)
    DSV3_CALL(make_buffer(&out, N * D, NULL));
    DSV3_CALL(make_buffer(&rstd, N, NULL));
    DSV3_CALL(make_buffer(&dx, N * D, NULL));
    DSV3_CALL(make_buffer(&dweight, D, dweight0));
    DSV3_CALL(impl->rmsnorm_forward(out, rstd, x, weight, N, D, eps));
    DSV3_CALL(impl->rmsnorm_backward(dx, dweight, dout, x, weight, rstd, N, D));
    DSV3_CALL(check(c, impl, "out", out, N * D, "out"));
    DSV3_CALL(check(c, impl, "rstd", rstd, N, "rstd"));
    DSV3_CALL(check(c, impl, "dx", dx, N * D, "dx"));
    DSV3_CALL(check(c, impl, "dweight (added)", dweight, D, "dweight"));
    return DSV3_OK;
}

static Dsv3Err test_linear(const Impl *impl) {
    const char *c = "linear";
    int32_t *dims = NULL;
    float *x = NULL, *weight = NULL, *dout = NULL, *dx0 = NULL, *dweight0 = NULL;
    float *out = NULL, *dx = NULL, *dx_acc = NULL, *dweight = NULL, *dweight_scratch = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    const int64_t N = dims[0], I = dims[1], O = dims[2];
    DSV3_CALL(read_f32(&x, NULL, c, "x"));               // (N, I)
    DSV3_CALL(read_f32(&weight, NULL, c, "weight"));     // (O, I)
    DSV3_CALL(read_f32(&dout, NULL, c, "dout"));         // (N, O)
    DSV3_CALL(read_f32(&dx0, NULL, c, "dx0"));           // (N, I)
    DSV3_CALL(read_f32(&dweight0, NULL, c, "dweight0")); // (O, I)
    DSV3_CALL(make_buffer(&out, N * O, NULL));
    DSV3_CALL(make_buffer(&dx, N * I, NULL));
    DSV3_CALL(make_buffer(&dx_acc, N * I, dx0));
    DSV3_CALL(make_buffer(&dweight, O * I, dweight0));
    DSV3_CALL(make_buffer(&dweight_scratch, O * I, NULL));
    DSV3_CALL(impl->linear_forward(out, x, weight, N, I, O));
    DSV3_CALL(impl->linear_backward(dx, dweight, dout, x, weight, N, I, O, 0));
    DSV3_CALL(impl->linear_backward(dx_acc, dweight_scratch, dout, x, weight, N, I, O, 1));
    DSV3_CALL(check(c, impl, "out", out, N * O, "out"));
    DSV3_CALL(check(c, impl, "dx", dx, N * I, "dx"));
    DSV3_CALL(check(c, impl, "dx (accumulate_dx)", dx_acc, N * I, "dx_accumulated"));
    DSV3_CALL(check(c, impl, "dweight (added)", dweight, O * I, "dweight"));
    return DSV3_OK;
}

static Dsv3Err test_swiglu(const Impl *impl) {
    const char *c = "swiglu";
    int32_t *dims = NULL;
    float *a = NULL, *b = NULL, *dh = NULL, *h = NULL, *da = NULL, *db = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    const int64_t N = dims[0], Fh = dims[1];
    DSV3_CALL(read_f32(&a, NULL, c, "a"));   // (N, F)
    DSV3_CALL(read_f32(&b, NULL, c, "b"));   // (N, F)
    DSV3_CALL(read_f32(&dh, NULL, c, "dh")); // (N, F)
    DSV3_CALL(make_buffer(&h, N * Fh, NULL));
    // The backward writes da over a copy of a and db over a copy of b, the aliasing the API
    // allows.
    DSV3_CALL(make_buffer(&da, N * Fh, a));
    DSV3_CALL(make_buffer(&db, N * Fh, b));
    DSV3_CALL(impl->swiglu_forward(h, a, b, N, Fh));
    DSV3_CALL(impl->swiglu_backward(da, db, dh, da, db, N, Fh));
    DSV3_CALL(check(c, impl, "h", h, N * Fh, "h"));
    DSV3_CALL(check(c, impl, "da (in place of a)", da, N * Fh, "da"));
    DSV3_CALL(check(c, impl, "db (in place of b)", db, N * Fh, "db"));
    return DSV3_OK;
}

static Dsv3Err test_cross_entropy(const Impl *impl, const char *c) {
    int32_t *dims = NULL, *labels = NULL;
    double *params = NULL, *expected_loss = NULL;
    float *h = NULL, *weight = NULL, *dweight0 = NULL, *dh = NULL, *dweight = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    DSV3_CALL(read_f64(&params, NULL, c, "params"));
    const int64_t N = dims[0], D = dims[1], V = dims[2], chunk = dims[3];
    const float grad_scale = (float)params[0];
    DSV3_CALL(read_i32(&labels, NULL, c, "labels"));     // (N)
    DSV3_CALL(read_f32(&h, NULL, c, "h"));               // (N, D)
    DSV3_CALL(read_f32(&weight, NULL, c, "weight"));     // (V, D)
    DSV3_CALL(read_f32(&dweight0, NULL, c, "dweight0")); // (V, D)
    DSV3_CALL(read_f64(&expected_loss, NULL, c, "loss_sum"));
    DSV3_CALL(make_buffer(&dh, N * D, NULL));
    DSV3_CALL(make_buffer(&dweight, V * D, dweight0));

    double loss_only = 0, loss = 0;
    DSV3_CALL(
        impl->cross_entropy(&loss_only, NULL, NULL, h, weight, labels, N, D, V, grad_scale, chunk));
    DSV3_CALL(
        impl->cross_entropy(&loss, dh, dweight, h, weight, labels, N, D, V, grad_scale, chunk));
    check_scalar(c, impl, "loss_sum (no grad)", loss_only, expected_loss[0]);
    check_scalar(c, impl, "loss_sum", loss, expected_loss[0]);
    DSV3_CALL(check(c, impl, "dh", dh, N * D, "dh"));
    DSV3_CALL(check(c, impl, "dweight (added)", dweight, V * D, "dweight"));
    return DSV3_OK;
}

static Dsv3Err test_adamw(const Impl *impl) {
    const char *c = "adamw";
    int32_t *dims = NULL;
    double *params = NULL;
    float *param0 = NULL, *param = NULL, *m = NULL, *v = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    DSV3_CALL(read_f64(&params, NULL, c, "params"));
    const int64_t n = dims[0], steps = dims[1];
    DSV3_CHECK(steps <= MAX_ADAMW_STEPS, DSV3_ERR_USAGE,
               "adamw case: %" PRId64 " steps, at most %d", steps, MAX_ADAMW_STEPS);
    DSV3_CALL(read_f32(&param0, NULL, c, "param_init")); // (n)
    DSV3_CALL(make_buffer(&param, n, param0));
    DSV3_CALL(make_buffer(&m, n, NULL));
    DSV3_CALL(make_buffer(&v, n, NULL));
    Dsv3AdamWArgs args = {.beta1 = (float)params[0],
                          .beta2 = (float)params[1],
                          .eps = (float)params[2],
                          .weight_decay = (float)params[3]};
    for (int64_t s = 0; s < steps; s++) {
        char name[NAME_CAPACITY], what[NAME_CAPACITY];
        float *grad = NULL;
        snprintf(name, sizeof name, "grad%" PRId64, s);
        DSV3_CALL(read_f32(&grad, NULL, c, name));
        args.lr = (float)params[4 + s];
        args.step = s + 1;
        DSV3_CALL(impl->adamw_step(param, grad, m, v, n, &args));
        const struct {
            const char *prefix;
            const float *got;
        } outputs[] = {{"param", param}, {"m", m}, {"v", v}};
        for (size_t k = 0; k < sizeof outputs / sizeof outputs[0]; k++) {
            snprintf(name, sizeof name, "%s%" PRId64, outputs[k].prefix, s);
            snprintf(what, sizeof what, "%s after step %" PRId64, outputs[k].prefix, s + 1);
            DSV3_CALL(check(c, impl, what, outputs[k].got, n, name));
        }
    }
    return DSV3_OK;
}

// torch.nn.utils.clip_grad_norm_: total = sqrt(Σ over tensors of Σ g²), every gradient scaled
// by min(1, max_norm / (total + 1e-6)).
static Dsv3Err test_clip(const Impl *impl, const char *c) {
    static const double CLIP_EPS = 1e-6; // torch's guard against a zero norm
    int32_t *dims = NULL;
    double *params = NULL, *expected_total = NULL;
    float *grads[MAX_CLIP_TENSORS] = {0};
    int64_t sizes[MAX_CLIP_TENSORS] = {0};
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    DSV3_CALL(read_f64(&params, NULL, c, "params"));
    DSV3_CALL(read_f64(&expected_total, NULL, c, "total_norm"));
    const int64_t tensors = dims[0];
    DSV3_CHECK(tensors <= MAX_CLIP_TENSORS, DSV3_ERR_USAGE,
               "clip case: %" PRId64 " tensors, at most %d", tensors, MAX_CLIP_TENSORS);
    const double max_norm = params[0];
    double sum = 0;
    for (int64_t t = 0; t < tensors; t++) {
        char name[NAME_CAPACITY];
        snprintf(name, sizeof name, "grad%" PRId64, t);
        DSV3_CALL(read_f32(&grads[t], &sizes[t], c, name));
        sum += impl->sum_squares(grads[t], sizes[t]);
    }
    const double total = sqrt(sum);
    const double coef = fmin(1.0, max_norm / (total + CLIP_EPS));
    check_scalar(c, impl, "total norm", total, expected_total[0]);
    for (int64_t t = 0; t < tensors; t++) {
        char name[NAME_CAPACITY], what[NAME_CAPACITY];
        impl->scale(grads[t], sizes[t], (float)coef);
        snprintf(name, sizeof name, "clipped%" PRId64, t);
        snprintf(what, sizeof what, "clipped grad %" PRId64, t);
        DSV3_CALL(check(c, impl, what, grads[t], sizes[t], name));
    }
    return DSV3_OK;
}

static Dsv3Err run_all(void) {
    static const char *const CE_CASES[] = {"ce_v2048", "ce_v5000", "ce_chunk_over_n",
                                           "ce_all_ignored"};
    static const char *const CLIP_CASES[] = {"clip_active", "clip_idle"};
    for (int i = 0; i < IMPL_COUNT; i++) {
        const Impl *impl = &IMPLS[i];
        Dsv3Err err = DSV3_OK;
        DSV3_CALL_GOTO(err, fail, test_embedding(impl));
        release_all();
        DSV3_CALL_GOTO(err, fail, test_rmsnorm(impl));
        release_all();
        DSV3_CALL_GOTO(err, fail, test_linear(impl));
        release_all();
        DSV3_CALL_GOTO(err, fail, test_swiglu(impl));
        release_all();
        for (size_t k = 0; k < sizeof CE_CASES / sizeof CE_CASES[0]; k++) {
            DSV3_CALL_GOTO(err, fail, test_cross_entropy(impl, CE_CASES[k]));
            release_all();
        }
        DSV3_CALL_GOTO(err, fail, test_adamw(impl));
        release_all();
        for (size_t k = 0; k < sizeof CLIP_CASES / sizeof CLIP_CASES[0]; k++) {
            DSV3_CALL_GOTO(err, fail, test_clip(impl, CLIP_CASES[k]));
            release_all();
        }
        continue;
    fail:
        release_all();
        return err;
    }
    return DSV3_OK;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR (written by tests/reference/ops_dense.py)\n", argv[0]);
        return 2;
    }
    case_root = argv[1];
    if (run_all() != DSV3_OK) {
        fprintf(stderr, "test_ops_dense: %s\n", dsv3_error_text());
        return 1;
    }
    if (failures > 0) {
        printf("test_ops_dense: %d check(s) above the tolerance %.0e\n", failures, TOLERANCE);
        return 1;
    }
    printf("test_ops_dense: every check within %.0e\n", TOLERANCE);
    return 0;
}
