// linear.c: y = x · Wᵀ without bias, torch.nn.Linear's weight layout (fast CPU version).
//
// All three products are GEMMs (dsv3_cpu_gemm) on the row-major buffers, with the transposes
// chosen so that nothing is copied:
//   forward   out (N, Out) = x (N, In) · W (Out, In)ᵀ
//   backward  dx (N, In)   = dout (N, Out) · W (Out, In)
//             dW (Out, In) += dout (N, Out)ᵀ · x (N, In)
// On several threads each product is cut into blocks of its output's rows, and the threads run
// the blocks side by side, each with a one-thread GEMM: BLAS's own threads gain little on the
// narrow GEMMs of small models (256 features), and backward's two products are independent.
//
// Legend: N rows (tokens), In input features, Out output features.
#include <inttypes.h>
#include <limits.h>
#include <omp.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// OpenBLAS takes its sizes as 32-bit ints (the LP64 interface); the other checks are shared
// with the reference version (checks.h).
static Dsv3Err linear_check_sizes(int64_t N, int64_t In, int64_t Out) {
    DSV3_CHECK(N >= 0 && N <= INT_MAX, DSV3_ERR_USAGE,
               "linear: N = %" PRId64 " rows, expected 0 <= N <= %d", N, INT_MAX);
    DSV3_CHECK(In > 0 && In <= INT_MAX, DSV3_ERR_USAGE,
               "linear: In = %" PRId64 " input features, expected 0 < In <= %d", In, INT_MAX);
    DSV3_CHECK(Out > 0 && Out <= INT_MAX, DSV3_ERR_USAGE,
               "linear: Out = %" PRId64 " output features, expected 0 < Out <= %d", Out, INT_MAX);
    return DSV3_OK;
}

// Rows of an output below which a block is not worth a thread of its own.
enum { LINEAR_MIN_BLOCK_ROWS = 64 };

// Rows [r0, r1) of block i of `blocks` over `rows`.
static void block_rows(int64_t rows, int64_t blocks, int64_t i, int64_t *r0, int64_t *r1) {
    *r0 = rows * i / blocks;
    *r1 = rows * (i + 1) / blocks;
}

// How many blocks to cut `rows` into for `threads` threads.
static int64_t blocks_for(int64_t rows, int64_t threads) {
    const int64_t most = rows / LINEAR_MIN_BLOCK_ROWS;
    return most < 1 ? 1 : (threads < most ? threads : most);
}

// out rows [r0, r1) = x rows [r0, r1) · Wᵀ.
static void forward_rows(const Dsv3KernelContext *ctx, float *out, const float *x,
                         const float *weight, int64_t r0, int64_t r1, int64_t In, int64_t Out) {
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, (int)(r1 - r0), (int)Out, (int)In, 1.0f,
                  x + r0 * In, (int)In, weight, (int)In, 0.0f, out + r0 * Out, (int)Out);
}

// dx rows [r0, r1) (+)= dout rows [r0, r1) · W.
static void dx_rows(const Dsv3KernelContext *ctx, float *dx, const float *dout, const float *weight,
                    int64_t r0, int64_t r1, int64_t In, int64_t Out, int accumulate) {
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, (int)(r1 - r0), (int)In, (int)Out,
                  1.0f, dout + r0 * Out, (int)Out, weight, (int)In, accumulate ? 1.0f : 0.0f,
                  dx + r0 * In, (int)In);
}

// dW rows [r0, r1) += (dout columns [r0, r1))ᵀ · x.
static void dweight_rows(const Dsv3KernelContext *ctx, float *dweight, const float *dout,
                         const float *x, int64_t r0, int64_t r1, int64_t N, int64_t In,
                         int64_t Out) {
    dsv3_cpu_gemm(ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, (int)(r1 - r0), (int)In, (int)N, 1.0f,
                  dout + r0, (int)Out, x, (int)In, 1.0f, dweight + r0 * In, (int)In);
}

Dsv3Err dsv3_cpu_linear_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out_,
                                const void *x_, const void *weight_, int64_t N, int64_t In,
                                int64_t Out) {
    DSV3_CALL(dsv3_cpu_check_f32("linear_forward", dtype));
    float *out = out_;                      // (N, Out)
    const float *x = x_, *weight = weight_; // (N, In), (Out, In)
    DSV3_CALL(linear_check_sizes(N, In, Out));
    DSV3_CALL(dsv3_check_linear_forward(out, x, weight, N, In, Out));
    if (N == 0) return DSV3_OK;
    const int64_t blocks = blocks_for(N, omp_get_max_threads());
    if (blocks == 1) {
        forward_rows(ctx, out, x, weight, 0, N, In, Out);
        return DSV3_OK;
    }
    const int saved = dsv3_cpu_blas_threads_enter();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < blocks; i++) {
        int64_t r0, r1;
        block_rows(N, blocks, i, &r0, &r1);
        forward_rows(ctx, out, x, weight, r0, r1, In, Out);
    }
    dsv3_cpu_blas_threads_leave(saved);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_linear_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dx_,
                                 float *dweight, const void *dout_, const void *x_,
                                 const void *weight_, int64_t N, int64_t In, int64_t Out,
                                 int accumulate_dx) {
    DSV3_CALL(dsv3_cpu_check_f32("linear_backward", dtype));
    float *dx = dx_;                                       // (N, In)
    const float *dout = dout_, *x = x_, *weight = weight_; // (N, Out), (N, In), (Out, In)
    DSV3_CALL(linear_check_sizes(N, In, Out));
    DSV3_CALL(dsv3_check_linear_backward(dx, dweight, dout, x, weight, N, In, Out));
    if (N == 0) return DSV3_OK;
    // Each product is cut the same way whether or not the other is asked for (a zero-bubble
    // pipeline asks for them one at a time), so that both ways give the same bits: a product of
    // one block runs whole, on BLAS's threads; the blocks of the others run side by side.
    const int threads = omp_get_max_threads();
    const int64_t dx_blocks = dx == NULL ? 0 : blocks_for(N, threads);
    const int64_t dw_blocks = dweight == NULL ? 0 : blocks_for(Out, threads);
    if (dx_blocks == 1) dx_rows(ctx, dx, dout, weight, 0, N, In, Out, accumulate_dx);
    if (dw_blocks == 1) dweight_rows(ctx, dweight, dout, x, 0, Out, N, In, Out);
    const int64_t dx_tasks = dx_blocks > 1 ? dx_blocks : 0,
                  dw_tasks = dw_blocks > 1 ? dw_blocks : 0;
    if (dx_tasks + dw_tasks == 0) return DSV3_OK;
    const int saved = dsv3_cpu_blas_threads_enter();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < dx_tasks + dw_tasks; i++) {
        int64_t r0, r1;
        if (i < dx_tasks) {
            block_rows(N, dx_tasks, i, &r0, &r1);
            dx_rows(ctx, dx, dout, weight, r0, r1, In, Out, accumulate_dx);
        } else {
            block_rows(Out, dw_tasks, i - dx_tasks, &r0, &r1);
            dweight_rows(ctx, dweight, dout, x, r0, r1, N, In, Out);
        }
    }
    dsv3_cpu_blas_threads_leave(saved);
    return DSV3_OK;
}
