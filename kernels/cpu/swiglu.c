// swiglu.c: the SwiGLU gate h = silu(a) · b and its gradient (fast CPU version).
//
// silu(a) = a · σ(a), σ(a) = 1 / (1 + e^−a); d silu / da = σ(a) · (1 + a · (1 − σ(a))).
// Element-wise (dsv3_cpu_swiglu_rows, also the routed experts' gate), split between threads
// (one thread inside another op's parallel region) and vectorized (vec_exp instead of the C
// library's expf, which does not vectorize). For a → −∞, vec_exp saturates e^−a near 1.7e38 instead
// of overflowing, so σ(a) becomes ~6e-39 and silu(a) ~0, the right limit, with no special case.
//
// Legend: N rows (tokens or routed rows), F hidden width.
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/vec_exp.h"

// Elements below which the loop stays on one thread.
enum { SWIGLU_PARALLEL_MIN_ELEMENTS = 1 << 14 };

void dsv3_cpu_swiglu_rows(float *h, const float *a, const float *b, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= SWIGLU_PARALLEL_MIN_ELEMENTS)
    for (int64_t i = 0; i < count; i++) {
        const float x = a[i];
        h[i] = x / (1.0f + vec_exp(-x)) * b[i];
    }
}

void dsv3_cpu_swiglu_rows_backward(float *da, float *db, const float *dh, const float *a,
                                   const float *b, int64_t count) {
    // Each element is read before it is written, so outputs may alias inputs.
#pragma omp parallel for simd schedule(static) if (count >= SWIGLU_PARALLEL_MIN_ELEMENTS)
    for (int64_t i = 0; i < count; i++) {
        const float x = a[i], y = b[i], g = dh[i];
        const float sig = 1.0f / (1.0f + vec_exp(-x));
        da[i] = g * y * sig * (1.0f + x * (1.0f - sig));
        db[i] = g * x * sig;
    }
}

Dsv3Err dsv3_cpu_swiglu_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *h_,
                                const void *a_, const void *b_, int64_t N, int64_t F) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("swiglu_forward", dtype));
    float *h = h_;                // (N, F)
    const float *a = a_, *b = b_; // (N, F) each
    DSV3_CALL(dsv3_check_swiglu_forward(h, a, b, N, F));
    if (N == 0) return DSV3_OK;
    dsv3_cpu_swiglu_rows(h, a, b, N * F);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_swiglu_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *da_,
                                 void *db_, const void *dh_, const void *a_, const void *b_,
                                 int64_t N, int64_t F) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("swiglu_backward", dtype));
    float *da = da_, *db = db_;              // (N, F) each
    const float *dh = dh_, *a = a_, *b = b_; // (N, F) each
    DSV3_CALL(dsv3_check_swiglu_backward(da, db, dh, a, b, N, F));
    if (N == 0) return DSV3_OK;
    dsv3_cpu_swiglu_rows_backward(da, db, dh, a, b, N * F);
    return DSV3_OK;
}
