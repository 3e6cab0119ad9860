// elementwise.c: element-wise sums and column copies (fast CPU version): add for the residual
// connections, copy_columns for splitting a matrix into column blocks and joining them back.
//
// add is split between threads and vectorised; copy_columns copies one row per memcpy, rows
// split between threads when there are enough elements.
//
// Legend: n elements; rows × cols the copied block, strides in elements.
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Elements below which a loop stays on one thread.
enum { ELEMENTWISE_PARALLEL_MIN_ELEMENTS = 1 << 15 };

Dsv3Err dsv3_cpu_add(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out_,
                     const void *a_, const void *b_, int64_t n) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("add", dtype));
    float *out = out_;            // (n), may alias a or b
    const float *a = a_, *b = b_; // (n) each
    DSV3_CALL(dsv3_check_add(out, a, b, n));
#pragma omp parallel for simd schedule(static) if (n >= ELEMENTWISE_PARALLEL_MIN_ELEMENTS)
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_copy_columns(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dst_,
                              int64_t dst_stride, const void *src_, int64_t src_stride,
                              int64_t rows, int64_t cols) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("copy_columns", dtype));
    float *dst = dst_;       // (rows, dst_stride), columns [0, cols) written
    const float *src = src_; // (rows, src_stride), columns [0, cols) read
    DSV3_CALL(dsv3_check_copy_columns(dst, dst_stride, src, src_stride, rows, cols));
    if (rows == 0 || cols == 0) return DSV3_OK;
    const size_t row_bytes = (size_t)cols * sizeof(float);
#pragma omp parallel for schedule(static) if (rows * cols >= ELEMENTWISE_PARALLEL_MIN_ELEMENTS)
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + r * dst_stride, src + r * src_stride, row_bytes); // (cols) ← (cols)
    return DSV3_OK;
}
