// swiglu_reference.c: the SwiGLU gate h = silu(a) · b and its gradient, written for clarity.
//
// silu(a) = a · σ(a) with σ(a) = 1 / (1 + e^−a), computed in double.
//   da = dh · b · σ(a) · (1 + a · (1 − σ(a))),   db = dh · silu(a).
//
// Legend: N rows (tokens or routed rows), F hidden width.
#include <math.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cpu/cpu.h"

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

Dsv3Err dsv3_cpu_reference_swiglu_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                          void *h_, const void *a_, const void *b_, int64_t N,
                                          int64_t F) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("swiglu_forward", dtype));
    float *h = h_;                // (N, F)
    const float *a = a_, *b = b_; // (N, F) each
    DSV3_CALL(dsv3_check_swiglu_forward(h, a, b, N, F));
    if (N == 0) return DSV3_OK;
    for (int64_t i = 0; i < N * F; i++)
        h[i] = (float)(a[i] * sigmoid(a[i]) * b[i]);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_swiglu_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                           void *da_, void *db_, const void *dh_, const void *a_,
                                           const void *b_, int64_t N, int64_t F) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("swiglu_backward", dtype));
    float *da = da_, *db = db_;              // (N, F) each
    const float *dh = dh_, *a = a_, *b = b_; // (N, F) each
    DSV3_CALL(dsv3_check_swiglu_backward(da, db, dh, a, b, N, F));
    if (N == 0) return DSV3_OK;
    for (int64_t i = 0; i < N * F; i++) {
        double x = a[i], y = b[i], g = dh[i]; // read first: da may alias a, db may alias b
        double s = sigmoid(x);
        da[i] = (float)(g * y * s * (1.0 + x * (1.0 - s)));
        db[i] = (float)(g * x * s);
    }
    return DSV3_OK;
}
