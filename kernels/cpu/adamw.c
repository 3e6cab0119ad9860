// adamw.c: the AdamW step, and the sum of squares and scaling that gradient clipping needs
// (fast CPU version).
//
// The step matches torch.optim.AdamW (single-tensor path): the scalars (decay factor, bias
// corrections, step size) are computed in double as Python computes them, then used in fp32
// on every element, in torch's order:
//   param ·= 1 − lr·wd
//   m = β1·m + (1 − β1)·g;   v = β2·v + (1 − β2)·g²
//   param −= lr / (1 − β1^step) · m / (sqrt(v) / sqrt(1 − β2^step) + eps)
// Element-wise, split between threads.
//
// Legend: n elements of one flat parameter buffer (and of its gradient and moments).
#include <math.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Elements below which a loop stays on one thread.
enum { ADAMW_PARALLEL_MIN_ELEMENTS = 1 << 15 };

Dsv3Err dsv3_cpu_adamw_step(const Dsv3KernelContext *ctx, float *param, const float *grad, float *m,
                            float *v, int64_t n, const Dsv3AdamWArgs *args) {
    (void)ctx;
    DSV3_CALL(dsv3_check_adamw(param, grad, m, v, n, args));
    const double lr = args->lr, beta1 = args->beta1, beta2 = args->beta2;
    const double step = (double)args->step;
    const float decay = (float)(1.0 - lr * (double)args->weight_decay);
    const float b1 = args->beta1, b2 = args->beta2;
    const float one_minus_b1 = (float)(1.0 - beta1), one_minus_b2 = (float)(1.0 - beta2);
    const float step_size = (float)(lr / (1.0 - pow(beta1, step)));
    const float bias_correction2_sqrt = (float)sqrt(1.0 - pow(beta2, step));
    const float eps = args->eps;
#pragma omp parallel for simd schedule(static) if (n >= ADAMW_PARALLEL_MIN_ELEMENTS)
    for (int64_t i = 0; i < n; i++) {
        const float g = grad[i];
        const float p = param[i] * decay;
        const float mi = m[i] * b1 + one_minus_b1 * g;
        const float vi = v[i] * b2 + one_minus_b2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        param[i] = p - step_size * (mi / (sqrtf(vi) / bias_correction2_sqrt + eps));
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_sum_squares(const Dsv3KernelContext *ctx, double *out, const float *x, int64_t n) {
    (void)ctx;
    DSV3_CALL(dsv3_check_sum_squares(out, x, n));
    double sum = 0;
    const int parallel = n >= ADAMW_PARALLEL_MIN_ELEMENTS;
#pragma omp parallel for simd schedule(static) reduction(+ : sum) if (parallel)
    for (int64_t i = 0; i < n; i++)
        sum += (double)x[i] * x[i];
    *out = sum;
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_scale(const Dsv3KernelContext *ctx, float *x, int64_t n, float factor) {
    (void)ctx;
    DSV3_CALL(dsv3_check_scale(x, n));
#pragma omp parallel for simd schedule(static) if (n >= ADAMW_PARALLEL_MIN_ELEMENTS)
    for (int64_t i = 0; i < n; i++)
        x[i] *= factor;
    return DSV3_OK;
}
