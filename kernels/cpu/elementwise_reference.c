// elementwise_reference.c: element-wise sums and column copies, written for clarity: add
// (out = a + b, element by element) and copy_columns (a column block of a row-major matrix
// into another, element by element).
//
// Legend: n elements; rows × cols the copied block, strides in elements.
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_reference_add(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out_,
                               const void *a_, const void *b_, int64_t n) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("add", dtype));
    float *out = out_;            // (n), may alias a or b
    const float *a = a_, *b = b_; // (n) each
    DSV3_CALL(dsv3_check_add(out, a, b, n));
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_copy_columns(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                        void *dst_, int64_t dst_stride, const void *src_,
                                        int64_t src_stride, int64_t rows, int64_t cols) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("copy_columns", dtype));
    float *dst = dst_;       // (rows, dst_stride)
    const float *src = src_; // (rows, src_stride)
    DSV3_CALL(dsv3_check_copy_columns(dst, dst_stride, src, src_stride, rows, cols));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            dst[r * dst_stride + c] = src[r * src_stride + c];
    return DSV3_OK;
}
