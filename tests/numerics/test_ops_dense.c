// Numerics of the dense ops against PyTorch in float64 (tests/reference/ops_dense.py):
// embedding, RMSNorm, linear, SwiGLU, the output head fused with cross-entropy, AdamW over
// several steps, and clipping by the global gradient norm built from dsv3_sum_squares and
// dsv3_scale.
//
// Usage: test_ops_dense CASE_DIR. Both the reference and the fast version of every op (a
// context of DSV3_BACKEND_CPU_REFERENCE, then of DSV3_BACKEND_CPU) run in float32 on the same
// inputs; each output and gradient must be within TOLERANCE relative error
// (‖got − expected‖ / ‖expected‖) of the float64 expectation. Prints one line per check and
// exits non-zero when any check fails.
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "case.h"
#include "kernels/kernels.h"
#include "tests/kernels_test.h"

#define TOLERANCE 1e-4

enum { NAME_CAPACITY = 256, MAX_CLIP_TENSORS = 8, MAX_ADAMW_STEPS = 16 };

// Columns of the check lines: sub-case, check.
enum { CASE_WIDTH = 16, WHAT_WIDTH = 22 };

// Every tensor of these ops is fp32.
static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

// Both versions of every op, so that each case runs them the same way: one context each.
typedef struct {
    const char *name;
    Dsv3Backend backend;
} Impl;

static const Impl IMPLS[] = {
    {"reference", DSV3_BACKEND_CPU_REFERENCE},
    {"fast", DSV3_BACKEND_CPU},
};
enum { IMPL_COUNT = sizeof IMPLS / sizeof IMPLS[0] };

static Dsv3Err test_embedding(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL, *tokens = NULL;
    float *weight = NULL, *dout = NULL, *dweight0 = NULL, *out = NULL, *dweight = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    const int64_t N = dims[0], D = dims[1], V = dims[2];
    DSV3_CALL(dsv3_case_read_i32(c, &tokens, NULL, "tokens"));
    DSV3_CALL(dsv3_case_read_f32(c, &weight, NULL, "weight"));     // (V, D)
    DSV3_CALL(dsv3_case_read_f32(c, &dout, NULL, "dout"));         // (N, D)
    DSV3_CALL(dsv3_case_read_f32(c, &dweight0, NULL, "dweight0")); // (V, D)
    DSV3_CALL(DSV3_CASE_BUFFER(c, out, N * D, NULL));              // (N, D)
    DSV3_CALL(DSV3_CASE_BUFFER(c, dweight, V * D, dweight0));      // (V, D)
    DSV3_CALL(dsv3_embedding_forward(kc, F32, out, tokens, weight, N, D, V, 0));
    DSV3_CALL(dsv3_embedding_backward(kc, F32, dweight, dout, tokens, N, D, V, 0));
    DSV3_CALL(dsv3_case_check(c, "out", out, N * D, "out"));
    DSV3_CALL(dsv3_case_check(c, "dweight (added)", dweight, V * D, "dweight"));
    return DSV3_OK;
}

static Dsv3Err test_rmsnorm(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL;
    double *params = NULL;
    float *x = NULL, *weight = NULL, *dout = NULL, *dweight0 = NULL;
    float *out = NULL, *rstd = NULL, *dx = NULL, *dweight = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    DSV3_CALL(dsv3_case_read_f64(c, &params, NULL, "params"));
    const int64_t N = dims[0], D = dims[1];
    const float eps = (float)params[0];
    DSV3_CALL(dsv3_case_read_f32(c, &x, NULL, "x"));               // (N, D)
    DSV3_CALL(dsv3_case_read_f32(c, &weight, NULL, "weight"));     // (D)
    DSV3_CALL(dsv3_case_read_f32(c, &dout, NULL, "dout"));         // (N, D)
    DSV3_CALL(dsv3_case_read_f32(c, &dweight0, NULL, "dweight0")); // (D)
    DSV3_CALL(DSV3_CASE_BUFFER(c, out, N * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, rstd, N, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dx, N * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dweight, D, dweight0));
    DSV3_CALL(dsv3_rmsnorm_forward(kc, F32, out, rstd, x, weight, N, D, eps));
    DSV3_CALL(dsv3_rmsnorm_backward(SIZED(kc, RMSNORM_BACKWARD, .N = N, .D = D), F32, dx, dweight,
                                    dout, x, weight, rstd, N, D));
    DSV3_CALL(dsv3_case_check(c, "out", out, N * D, "out"));
    DSV3_CALL(dsv3_case_check(c, "rstd", rstd, N, "rstd"));
    DSV3_CALL(dsv3_case_check(c, "dx", dx, N * D, "dx"));
    DSV3_CALL(dsv3_case_check(c, "dweight (added)", dweight, D, "dweight"));
    return DSV3_OK;
}

static Dsv3Err test_linear(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL;
    float *x = NULL, *weight = NULL, *dout = NULL, *dx0 = NULL, *dweight0 = NULL;
    float *out = NULL, *dx = NULL, *dx_acc = NULL, *dweight = NULL, *dweight_scratch = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    const int64_t N = dims[0], I = dims[1], O = dims[2];
    DSV3_CALL(dsv3_case_read_f32(c, &x, NULL, "x"));               // (N, I)
    DSV3_CALL(dsv3_case_read_f32(c, &weight, NULL, "weight"));     // (O, I)
    DSV3_CALL(dsv3_case_read_f32(c, &dout, NULL, "dout"));         // (N, O)
    DSV3_CALL(dsv3_case_read_f32(c, &dx0, NULL, "dx0"));           // (N, I)
    DSV3_CALL(dsv3_case_read_f32(c, &dweight0, NULL, "dweight0")); // (O, I)
    DSV3_CALL(DSV3_CASE_BUFFER(c, out, N * O, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dx, N * I, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dx_acc, N * I, dx0));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dweight, O * I, dweight0));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dweight_scratch, O * I, NULL));
    DSV3_CALL(dsv3_linear_forward(kc, F32, out, x, weight, N, I, O));
    DSV3_CALL(dsv3_linear_backward(kc, F32, dx, dweight, dout, x, weight, N, I, O, 0));
    DSV3_CALL(dsv3_linear_backward(kc, F32, dx_acc, dweight_scratch, dout, x, weight, N, I, O, 1));
    DSV3_CALL(dsv3_case_check(c, "out", out, N * O, "out"));
    DSV3_CALL(dsv3_case_check(c, "dx", dx, N * I, "dx"));
    DSV3_CALL(dsv3_case_check(c, "dx (accumulate_dx)", dx_acc, N * I, "dx_accumulated"));
    DSV3_CALL(dsv3_case_check(c, "dweight (added)", dweight, O * I, "dweight"));
    return DSV3_OK;
}

static Dsv3Err test_swiglu(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL;
    float *a = NULL, *b = NULL, *dh = NULL, *h = NULL, *da = NULL, *db = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    const int64_t N = dims[0], Fh = dims[1];
    DSV3_CALL(dsv3_case_read_f32(c, &a, NULL, "a"));   // (N, F)
    DSV3_CALL(dsv3_case_read_f32(c, &b, NULL, "b"));   // (N, F)
    DSV3_CALL(dsv3_case_read_f32(c, &dh, NULL, "dh")); // (N, F)
    DSV3_CALL(DSV3_CASE_BUFFER(c, h, N * Fh, NULL));
    // The backward writes da over a copy of a and db over a copy of b, the aliasing the API
    // allows.
    DSV3_CALL(DSV3_CASE_BUFFER(c, da, N * Fh, a));
    DSV3_CALL(DSV3_CASE_BUFFER(c, db, N * Fh, b));
    DSV3_CALL(dsv3_swiglu_forward(kc, F32, h, a, b, N, Fh));
    DSV3_CALL(dsv3_swiglu_backward(kc, F32, da, db, dh, da, db, N, Fh));
    DSV3_CALL(dsv3_case_check(c, "h", h, N * Fh, "h"));
    DSV3_CALL(dsv3_case_check(c, "da (in place of a)", da, N * Fh, "da"));
    DSV3_CALL(dsv3_case_check(c, "db (in place of b)", db, N * Fh, "db"));
    return DSV3_OK;
}

static Dsv3Err test_cross_entropy(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL, *labels = NULL;
    double *params = NULL, *expected_loss = NULL;
    float *h = NULL, *weight = NULL, *dweight0 = NULL, *dh = NULL, *dweight = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    DSV3_CALL(dsv3_case_read_f64(c, &params, NULL, "params"));
    const int64_t N = dims[0], D = dims[1], V = dims[2], chunk = dims[3];
    const float grad_scale = (float)params[0];
    DSV3_CALL(dsv3_case_read_i32(c, &labels, NULL, "labels"));     // (N)
    DSV3_CALL(dsv3_case_read_f32(c, &h, NULL, "h"));               // (N, D)
    DSV3_CALL(dsv3_case_read_f32(c, &weight, NULL, "weight"));     // (V, D)
    DSV3_CALL(dsv3_case_read_f32(c, &dweight0, NULL, "dweight0")); // (V, D)
    DSV3_CALL(dsv3_case_read_f64(c, &expected_loss, NULL, "loss_sum"));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dh, N * D, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dweight, V * D, dweight0));

    double loss_only = 0, loss = 0;
    const Dsv3OpShape shape = {.N = N, .D = D, .V = V, .chunk = chunk};
    DSV3_CALL(kernels_test_reserve(kc, DSV3_OP_CROSS_ENTROPY, &shape));
    DSV3_CALL(dsv3_cross_entropy(kc, F32, &loss_only, NULL, NULL, h, weight, labels, N, D, V,
                                 grad_scale, chunk));
    DSV3_CALL(dsv3_cross_entropy(kc, F32, &loss, dh, dweight, h, weight, labels, N, D, V,
                                 grad_scale, chunk));
    dsv3_case_check_scalar(c, "loss_sum (no grad)", loss_only, expected_loss[0]);
    dsv3_case_check_scalar(c, "loss_sum", loss, expected_loss[0]);
    DSV3_CALL(dsv3_case_check(c, "dh", dh, N * D, "dh"));
    DSV3_CALL(dsv3_case_check(c, "dweight (added)", dweight, V * D, "dweight"));
    return DSV3_OK;
}

static Dsv3Err test_adamw(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL;
    double *params = NULL;
    float *param0 = NULL, *param = NULL, *m = NULL, *v = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    DSV3_CALL(dsv3_case_read_f64(c, &params, NULL, "params"));
    const int64_t n = dims[0], steps = dims[1];
    DSV3_CHECK(steps <= MAX_ADAMW_STEPS, DSV3_ERR_USAGE,
               "adamw case: %" PRId64 " steps, at most %d", steps, MAX_ADAMW_STEPS);
    DSV3_CALL(dsv3_case_read_f32(c, &param0, NULL, "param_init")); // (n)
    DSV3_CALL(DSV3_CASE_BUFFER(c, param, n, param0));
    DSV3_CALL(DSV3_CASE_BUFFER(c, m, n, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, v, n, NULL));
    Dsv3AdamWArgs args = {.beta1 = (float)params[0],
                          .beta2 = (float)params[1],
                          .eps = (float)params[2],
                          .weight_decay = (float)params[3]};
    for (int64_t s = 0; s < steps; s++) {
        char name[NAME_CAPACITY], what[NAME_CAPACITY];
        float *grad = NULL;
        snprintf(name, sizeof name, "grad%" PRId64, s);
        DSV3_CALL(dsv3_case_read_f32(c, &grad, NULL, name));
        args.lr = (float)params[4 + s];
        args.step = s + 1;
        DSV3_CALL(dsv3_adamw_step(kc, param, grad, m, v, n, &args));
        const struct {
            const char *prefix;
            const float *got;
        } outputs[] = {{"param", param}, {"m", m}, {"v", v}};
        for (size_t k = 0; k < sizeof outputs / sizeof outputs[0]; k++) {
            snprintf(name, sizeof name, "%s%" PRId64, outputs[k].prefix, s);
            snprintf(what, sizeof what, "%s after step %" PRId64, outputs[k].prefix, s + 1);
            DSV3_CALL(dsv3_case_check(c, what, outputs[k].got, n, name));
        }
    }
    return DSV3_OK;
}

// torch.nn.utils.clip_grad_norm_: total = sqrt(Σ over tensors of Σ g²), every gradient scaled
// by min(1, max_norm / (total + 1e-6)).
static Dsv3Err test_clip(Dsv3Case *c, Dsv3KernelContext *kc) {
    static const double CLIP_EPS = 1e-6; // torch's guard against a zero norm
    int32_t *dims = NULL;
    double *params = NULL, *expected_total = NULL;
    float *grads[MAX_CLIP_TENSORS] = {0};
    int64_t sizes[MAX_CLIP_TENSORS] = {0};
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    DSV3_CALL(dsv3_case_read_f64(c, &params, NULL, "params"));
    DSV3_CALL(dsv3_case_read_f64(c, &expected_total, NULL, "total_norm"));
    const int64_t tensors = dims[0];
    DSV3_CHECK(tensors <= MAX_CLIP_TENSORS, DSV3_ERR_USAGE,
               "clip case: %" PRId64 " tensors, at most %d", tensors, MAX_CLIP_TENSORS);
    const double max_norm = params[0];
    double sum = 0;
    for (int64_t t = 0; t < tensors; t++) {
        char name[NAME_CAPACITY];
        snprintf(name, sizeof name, "grad%" PRId64, t);
        DSV3_CALL(dsv3_case_read_f32(c, &grads[t], &sizes[t], name));
        double tensor_sum = 0;
        DSV3_CALL(dsv3_sum_squares(kc, &tensor_sum, grads[t], sizes[t]));
        sum += tensor_sum;
    }
    const double total = sqrt(sum);
    const double coef = fmin(1.0, max_norm / (total + CLIP_EPS));
    dsv3_case_check_scalar(c, "total norm", total, expected_total[0]);
    for (int64_t t = 0; t < tensors; t++) {
        char name[NAME_CAPACITY], what[NAME_CAPACITY];
        DSV3_CALL(dsv3_scale(kc, grads[t], sizes[t], (float)coef));
        snprintf(name, sizeof name, "clipped%" PRId64, t);
        snprintf(what, sizeof what, "clipped grad %" PRId64, t);
        DSV3_CALL(dsv3_case_check(c, what, grads[t], sizes[t], name));
    }
    return DSV3_OK;
}

int main(int argc, char **argv) {
    static const char *const CE_CASES[] = {"ce_v2048", "ce_v5000", "ce_chunk_over_n",
                                           "ce_all_ignored"};
    static const char *const CLIP_CASES[] = {"clip_active", "clip_idle"};
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR (written by tests/reference/ops_dense.py)\n", argv[0]);
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
        DSV3_CASE_RUN(&c, impl->name, "embedding", test_embedding(&c, &kc));
        DSV3_CASE_RUN(&c, impl->name, "rmsnorm", test_rmsnorm(&c, &kc));
        DSV3_CASE_RUN(&c, impl->name, "linear", test_linear(&c, &kc));
        DSV3_CASE_RUN(&c, impl->name, "swiglu", test_swiglu(&c, &kc));
        for (size_t k = 0; k < sizeof CE_CASES / sizeof CE_CASES[0]; k++)
            DSV3_CASE_RUN(&c, impl->name, CE_CASES[k], test_cross_entropy(&c, &kc));
        DSV3_CASE_RUN(&c, impl->name, "adamw", test_adamw(&c, &kc));
        for (size_t k = 0; k < sizeof CLIP_CASES / sizeof CLIP_CASES[0]; k++)
            DSV3_CASE_RUN(&c, impl->name, CLIP_CASES[k], test_clip(&c, &kc));
        kernels_test_release(&kc);
    }
    if (c.failures > 0) {
        printf("test_ops_dense: %d check(s) above the tolerance %.0e\n", c.failures, TOLERANCE);
        return 1;
    }
    printf("test_ops_dense: every check within %.0e\n", TOLERANCE);
    return 0;
}
