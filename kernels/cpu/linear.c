// linear.c: y = x · Wᵀ without bias, torch.nn.Linear's weight layout (fast CPU version).
//
// All three products are single OpenBLAS sgemm calls on the row-major buffers, with the
// transposes chosen so that nothing is copied:
//   forward   out (N, O) = x (N, I) · W (O, I)ᵀ
//   backward  dx (N, I)  = dout (N, O) · W (O, I)
//             dW (O, I) += dout (N, O)ᵀ · x (N, I)
//
// Legend: N rows (tokens), I input features, O output features.
#include <cblas.h>
// OpenBLAS's header pulls in <complex.h>, whose macro I (the imaginary unit) would replace the
// size I of kernels.h; nothing here uses complex numbers.
#undef I
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>

#include "kernels/kernels.h"

// OpenBLAS takes its sizes as 32-bit ints (the LP64 interface).
static Dsv3Err linear_check_sizes(int64_t N, int64_t I, int64_t O) {
    DSV3_CHECK(N >= 0 && N <= INT_MAX, DSV3_ERR_USAGE,
               "linear: N = %" PRId64 " rows, expected 0 <= N <= %d", N, INT_MAX);
    DSV3_CHECK(I > 0 && I <= INT_MAX, DSV3_ERR_USAGE,
               "linear: I = %" PRId64 " input features, expected 0 < I <= %d", I, INT_MAX);
    DSV3_CHECK(O > 0 && O <= INT_MAX, DSV3_ERR_USAGE,
               "linear: O = %" PRId64 " output features, expected 0 < O <= %d", O, INT_MAX);
    return DSV3_OK;
}

Dsv3Err dsv3_linear_forward(float *out, const float *x, const float *weight, int64_t N, int64_t I,
                            int64_t O) {
    DSV3_CALL(linear_check_sizes(N, I, O));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(out != NULL && x != NULL && weight != NULL, DSV3_ERR_USAGE,
               "linear_forward: out, x and weight must not be NULL");
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)O, (int)I, 1.0f, x, (int)I,
                weight, (int)I, 0.0f, out, (int)O);
    return DSV3_OK;
}

Dsv3Err dsv3_linear_backward(float *dx, float *dweight, const float *dout, const float *x,
                             const float *weight, int64_t N, int64_t I, int64_t O,
                             int accumulate_dx) {
    DSV3_CALL(linear_check_sizes(N, I, O));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(dweight != NULL && dout != NULL && x != NULL, DSV3_ERR_USAGE,
               "linear_backward: dweight, dout and x must not be NULL");
    DSV3_CHECK(dx == NULL || weight != NULL, DSV3_ERR_USAGE,
               "linear_backward: weight must not be NULL when dx is wanted");
    if (dx != NULL)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)I, (int)O, 1.0f, dout,
                    (int)O, weight, (int)I, accumulate_dx ? 1.0f : 0.0f, dx, (int)I);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)O, (int)I, (int)N, 1.0f, dout, (int)O,
                x, (int)I, 1.0f, dweight, (int)I);
    return DSV3_OK;
}
