// linear_reference.c: y = x · Wᵀ without bias (torch.nn.Linear's layout), written for clarity.
//
// Plain triple loops with double accumulators.
//
// Legend: N rows (tokens), I input features, O output features.
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/kernels_reference.h"

Dsv3Err dsv3_linear_forward_reference(float *out, const float *x, const float *weight, int64_t N,
                                      int64_t In, int64_t Out) {
    DSV3_CALL(dsv3_cpu_check_linear_forward(out, x, weight, N, In, Out));
    if (N == 0) return DSV3_OK;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < Out; o++) {
            double sum = 0;
            for (int64_t i = 0; i < In; i++)
                sum += (double)x[n * In + i] * weight[o * In + i];
            out[n * Out + o] = (float)sum;
        }
    return DSV3_OK;
}

Dsv3Err dsv3_linear_backward_reference(float *dx, float *dweight, const float *dout, const float *x,
                                       const float *weight, int64_t N, int64_t In, int64_t Out,
                                       int accumulate_dx) {
    DSV3_CALL(dsv3_cpu_check_linear_backward(dx, dweight, dout, x, weight, N, In, Out));
    if (N == 0) return DSV3_OK;
    if (dx != NULL)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < In; i++) {
                double sum = 0;
                for (int64_t o = 0; o < Out; o++)
                    sum += (double)dout[n * Out + o] * weight[o * In + i];
                dx[n * In + i] = accumulate_dx ? (float)(dx[n * In + i] + sum) : (float)sum;
            }
    for (int64_t o = 0; o < Out; o++)
        for (int64_t i = 0; i < In; i++) {
            double sum = 0;
            for (int64_t n = 0; n < N; n++)
                sum += (double)dout[n * Out + o] * x[n * In + i];
            dweight[o * In + i] += (float)sum;
        }
    return DSV3_OK;
}
