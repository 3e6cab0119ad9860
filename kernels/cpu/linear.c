// linear.c: y = x · Wᵀ without bias, torch.nn.Linear's weight layout (fast CPU version).
//
// All three products are single GEMMs (dsv3_cpu_gemm) on the row-major buffers, with the
// transposes chosen so that nothing is copied:
//   forward   out (N, Out) = x (N, In) · W (Out, In)ᵀ
//   backward  dx (N, In)   = dout (N, Out) · W (Out, In)
//             dW (Out, In) += dout (N, Out)ᵀ · x (N, In)
//
// Legend: N rows (tokens), In input features, Out output features.
#include <inttypes.h>
#include <limits.h>
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

Dsv3Err dsv3_cpu_linear_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out_,
                                const void *x_, const void *weight_, int64_t N, int64_t In,
                                int64_t Out) {
    DSV3_CALL(dsv3_cpu_check_f32("linear_forward", dtype));
    float *out = out_;                      // (N, Out)
    const float *x = x_, *weight = weight_; // (N, In), (Out, In)
    DSV3_CALL(linear_check_sizes(N, In, Out));
    DSV3_CALL(dsv3_cpu_check_linear_forward(out, x, weight, N, In, Out));
    if (N == 0) return DSV3_OK;
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, (int)N, (int)Out, (int)In, 1.0f, x,
                  (int)In, weight, (int)In, 0.0f, out, (int)Out);
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
    DSV3_CALL(dsv3_cpu_check_linear_backward(dx, dweight, dout, x, weight, N, In, Out));
    if (N == 0) return DSV3_OK;
    if (dx != NULL)
        dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, (int)N, (int)In, (int)Out, 1.0f,
                      dout, (int)Out, weight, (int)In, accumulate_dx ? 1.0f : 0.0f, dx, (int)In);
    if (dweight != NULL)
        dsv3_cpu_gemm(ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, (int)Out, (int)In, (int)N, 1.0f,
                      dout, (int)Out, x, (int)In, 1.0f, dweight, (int)In);
    return DSV3_OK;
}
