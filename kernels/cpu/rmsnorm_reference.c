// rmsnorm_reference.c: RMSNorm (torch.nn.RMSNorm) forward and backward, written for clarity.
//
// y = x · rstd · w with rstd = 1 / sqrt(mean(x²) + eps) per row. The backward follows from
// d rstd / d x_j = −rstd³ · x_j / D:
//   dx_j = rstd · w_j · dy_j − x_j · rstd³ / D · Σ_k dy_k w_k x_k,   dw_j += Σ_n dy_nj x_nj rstd_n.
//
// Legend: N rows (tokens), D normalised width.
#include <math.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_reference_rmsnorm_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                           void *out_, float *rstd, const void *x_,
                                           const void *weight_, int64_t N, int64_t D, float eps) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("rmsnorm_forward", dtype));
    float *out = out_;                      // (N, D)
    const float *x = x_, *weight = weight_; // (N, D), (D)
    DSV3_CALL(dsv3_check_rmsnorm_forward(out, rstd, x, weight, N, D, eps));
    if (N == 0) return DSV3_OK;
    for (int64_t n = 0; n < N; n++) {
        double mean_square = 0;
        for (int64_t j = 0; j < D; j++)
            mean_square += (double)x[n * D + j] * x[n * D + j];
        mean_square /= (double)D;
        double r = 1.0 / sqrt(mean_square + (double)eps);
        rstd[n] = (float)r;
        for (int64_t j = 0; j < D; j++)
            out[n * D + j] = (float)(x[n * D + j] * r * weight[j]);
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_rmsnorm_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                            void *dx_, float *dweight, const void *dout_,
                                            const void *x_, const void *weight_, const float *rstd,
                                            int64_t N, int64_t D) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("rmsnorm_backward", dtype));
    float *dx = dx_;                                       // (N, D)
    const float *dout = dout_, *x = x_, *weight = weight_; // (N, D), (N, D), (D)
    DSV3_CALL(dsv3_check_rmsnorm_backward(dx, dweight, dout, x, weight, rstd, N, D));
    if (N == 0) return DSV3_OK;
    for (int64_t n = 0; n < N; n++) {
        double r = rstd[n];
        double dot = 0; // Σ_k dy_k w_k x_k
        for (int64_t k = 0; k < D; k++)
            dot += (double)dout[n * D + k] * weight[k] * x[n * D + k];
        for (int64_t j = 0; j < D; j++)
            dx[n * D + j] = (float)(r * weight[j] * dout[n * D + j] -
                                    x[n * D + j] * r * r * r * dot / (double)D);
    }
    for (int64_t j = 0; j < D; j++) {
        double sum = 0;
        for (int64_t n = 0; n < N; n++)
            sum += (double)dout[n * D + j] * x[n * D + j] * rstd[n];
        dweight[j] += (float)sum;
    }
    return DSV3_OK;
}
