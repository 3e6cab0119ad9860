// adamw_reference.c: the AdamW step (torch.optim.AdamW), the sum of squares and the scaling
// that gradient clipping needs, written for clarity.
//
// Every element is computed in double and rounded once when stored:
//   param ·= 1 − lr·wd
//   m = β1·m + (1 − β1)·g;   v = β2·v + (1 − β2)·g²
//   m̂ = m / (1 − β1^step);   v̂ = v / (1 − β2^step)
//   param −= lr · m̂ / (sqrt(v̂) + eps)
//
// Legend: n elements of one flat parameter buffer (and of its gradient and moments).
#include <math.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_reference_adamw_step(const Dsv3KernelContext *ctx, float *param, const float *grad,
                                      float *m, float *v, int64_t n, const Dsv3AdamWArgs *args) {
    (void)ctx;
    DSV3_CALL(dsv3_check_adamw(param, grad, m, v, n, args));
    if (n == 0) return DSV3_OK;

    double lr = args->lr, beta1 = args->beta1, beta2 = args->beta2, eps = args->eps;
    double bias_correction1 = 1.0 - pow(beta1, (double)args->step);
    double bias_correction2 = 1.0 - pow(beta2, (double)args->step);
    for (int64_t i = 0; i < n; i++) {
        double g = grad[i];
        double p = param[i] * (1.0 - lr * args->weight_decay);
        double mi = beta1 * m[i] + (1.0 - beta1) * g;
        double vi = beta2 * v[i] + (1.0 - beta2) * g * g;
        double m_hat = mi / bias_correction1;
        double v_hat = vi / bias_correction2;
        param[i] = (float)(p - lr * m_hat / (sqrt(v_hat) + eps));
        m[i] = (float)mi;
        v[i] = (float)vi;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_sum_squares(const Dsv3KernelContext *ctx, double *out, const float *x,
                                       int64_t n) {
    (void)ctx;
    DSV3_CALL(dsv3_check_sum_squares(out, x, n));
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)x[i] * x[i];
    *out = sum;
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_scale(const Dsv3KernelContext *ctx, float *x, int64_t n, float factor) {
    (void)ctx;
    DSV3_CALL(dsv3_check_scale(x, n));
    for (int64_t i = 0; i < n; i++)
        x[i] *= factor;
    return DSV3_OK;
}
