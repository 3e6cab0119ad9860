// linear_reference.c: y = x · Wᵀ without bias (torch.nn.Linear's layout), written for clarity.
//
// Plain triple loops with double accumulators.
//
// Legend: N rows (tokens), In input features, Out output features.
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_reference_linear_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                          void *out_, const void *x_, const void *weight_,
                                          int64_t N, int64_t In, int64_t Out) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("linear_forward", dtype));
    float *out = out_;                      // (N, Out)
    const float *x = x_, *weight = weight_; // (N, In), (Out, In)
    DSV3_CALL(dsv3_check_linear_forward(out, x, weight, N, In, Out));
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

Dsv3Err dsv3_cpu_reference_linear_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                           void *dx_, float *dweight, const void *dout_,
                                           const void *x_, const void *weight_, int64_t N,
                                           int64_t In, int64_t Out, int accumulate_dx) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("linear_backward", dtype));
    float *dx = dx_;                                       // (N, In)
    const float *dout = dout_, *x = x_, *weight = weight_; // (N, Out), (N, In), (Out, In)
    DSV3_CALL(dsv3_check_linear_backward(dx, dweight, dout, x, weight, N, In, Out));
    if (N == 0) return DSV3_OK;
    if (dx != NULL)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < In; i++) {
                double sum = 0;
                for (int64_t o = 0; o < Out; o++)
                    sum += (double)dout[n * Out + o] * weight[o * In + i];
                dx[n * In + i] = accumulate_dx ? (float)(dx[n * In + i] + sum) : (float)sum;
            }
    if (dweight != NULL)
        for (int64_t o = 0; o < Out; o++)
            for (int64_t i = 0; i < In; i++) {
                double sum = 0;
                for (int64_t n = 0; n < N; n++)
                    sum += (double)dout[n * Out + o] * x[n * In + i];
                dweight[o * In + i] += (float)sum;
            }
    return DSV3_OK;
}
