// rmsnorm.c: RMSNorm (torch.nn.RMSNorm) forward and backward (fast CPU version).
//
// Forward, per row: rstd = 1 / sqrt(mean(x²) + eps), y = x · rstd · w.
// Backward, per row, with s = Σ_k dy_k w_k x_k:
//   dx_j = rstd · w_j · dy_j − x_j · rstd³ · s / D        (exact gradient, written)
//   dw_j += Σ_n dy_nj · x_nj · rstd_n                     (added)
// Rows are independent and split between threads. The weight gradient sums over rows: each
// thread sums its rows into its own double accumulator (D), and the accumulators are added in
// thread order at the end, so x and dout are read once and the result is the same on every
// run with the same thread count.
//
// Legend: N rows (tokens), D normalised width.
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels/checks.h"
#include "kernels/cpu/cpu.h"

// Elements below which a loop stays on one thread.
enum { RMSNORM_PARALLEL_MIN_ELEMENTS = 1 << 14 };

Dsv3Err dsv3_cpu_rmsnorm_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out_,
                                 float *rstd, const void *x_, const void *weight_, int64_t N,
                                 int64_t D, float eps) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("rmsnorm_forward", dtype));
    float *out = out_;                      // (N, D)
    const float *x = x_, *weight = weight_; // (N, D), (D)
    DSV3_CALL(dsv3_check_rmsnorm_forward(out, rstd, x, weight, N, D, eps));
    if (N == 0) return DSV3_OK;
#pragma omp parallel for schedule(static) if (N * D >= RMSNORM_PARALLEL_MIN_ELEMENTS)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D; // (D)
        float *yr = out + n * D;     // (D)
        double ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int64_t j = 0; j < D; j++)
            ss += (double)xr[j] * xr[j];
        const float r = (float)(1.0 / sqrt(ss / (double)D + (double)eps));
        rstd[n] = r;
#pragma omp simd
        for (int64_t j = 0; j < D; j++)
            yr[j] = xr[j] * r * weight[j];
    }
    return DSV3_OK;
}

// Threads of the backward: all of them when the rows are many enough, else one.
static int backward_threads(int64_t N, int64_t D, int threads) {
    return N * D >= RMSNORM_PARALLEL_MIN_ELEMENTS ? threads : 1;
}

// Workspace of the backward: partial (threads, D) doubles, each thread's share of dweight.
size_t dsv3_cpu_rmsnorm_backward_workspace(const Dsv3OpShape *shape, int threads) {
    Dsv3CpuLayout layout = {0};
    dsv3_cpu_layout_add(&layout, backward_threads(shape->N, shape->D, threads) * shape->D,
                        sizeof(double));
    return layout.bytes;
}

Dsv3Err dsv3_cpu_rmsnorm_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dx_,
                                  float *dweight, const void *dout_, const void *x_,
                                  const void *weight_, const float *rstd, int64_t N, int64_t D) {
    DSV3_CALL(dsv3_cpu_check_f32("rmsnorm_backward", dtype));
    float *dx = dx_;                                       // (N, D)
    const float *dout = dout_, *x = x_, *weight = weight_; // (N, D), (N, D), (D)
    DSV3_CALL(dsv3_check_rmsnorm_backward(dx, dweight, dout, x, weight, rstd, N, D));
    if (N == 0) return DSV3_OK;
    const int threads = backward_threads(N, D, omp_get_max_threads());
    const Dsv3OpShape shape = {.N = N, .D = D};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "rmsnorm_backward",
                                       dsv3_cpu_rmsnorm_backward_workspace(&shape, threads)));
    double *partial = ctx->workspace; // (threads, D) each thread's share of dweight
    memset(partial, 0, (size_t)threads * (size_t)D * sizeof(double));
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        double *acc = partial + (int64_t)omp_get_thread_num() * D; // (D)
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * D;    // (D)
            const float *gr = dout + n * D; // (D)
            float *dxr = dx + n * D;        // (D)
            double s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < D; j++)
                s += (double)(gr[j] * weight[j]) * xr[j];
            const float r = rstd[n];
            const float c = (float)((double)r * r * r * s / (double)D);
#pragma omp simd
            for (int64_t j = 0; j < D; j++) {
                const float xj = xr[j], gj = gr[j];
                dxr[j] = r * weight[j] * gj - xj * c;
                acc[j] += (double)(gj * xj * r);
            }
        }
    }
    for (int64_t j = 0; j < D; j++) {
        double sum = 0;
        for (int t = 0; t < threads; t++)
            sum += partial[(int64_t)t * D + j];
        dweight[j] += (float)sum;
    }
    return DSV3_OK;
}
