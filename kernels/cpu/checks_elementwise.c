// checks_elementwise: the shared argument checks of add, copy_columns and convert.
#include <inttypes.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"

Dsv3Err dsv3_cpu_check_add(const float *out, const float *a, const float *b, int64_t n) {
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "add: n = %" PRId64 ", expected n >= 0", n);
    if (n == 0) return DSV3_OK;
    DSV3_CHECK(out != NULL && a != NULL && b != NULL, DSV3_ERR_USAGE,
               "add: out, a and b must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_copy_columns(const float *dst, int64_t dst_stride, const float *src,
                                    int64_t src_stride, int64_t rows, int64_t cols) {
    DSV3_CHECK(rows >= 0 && cols >= 0, DSV3_ERR_USAGE,
               "copy_columns: rows = %" PRId64 ", cols = %" PRId64 ", expected both >= 0", rows,
               cols);
    DSV3_CHECK(dst_stride >= cols && src_stride >= cols, DSV3_ERR_USAGE,
               "copy_columns: dst_stride = %" PRId64 " and src_stride = %" PRId64
               " must be >= cols = %" PRId64 " (strides in elements)",
               dst_stride, src_stride, cols);
    if (rows == 0 || cols == 0) return DSV3_OK;
    DSV3_CHECK(dst != NULL && src != NULL, DSV3_ERR_USAGE,
               "copy_columns: dst and src must not be NULL");
    return DSV3_OK;
}

static size_t dtype_size(Dsv3TensorDtype dtype) {
    return dtype == DSV3_TENSOR_BF16 ? sizeof(uint16_t) : sizeof(float);
}

Dsv3Err dsv3_cpu_check_convert(const void *dst, Dsv3TensorDtype dst_dtype, const void *src,
                               Dsv3TensorDtype src_dtype, int64_t n) {
    const int f32_dst = dst_dtype == DSV3_TENSOR_F32, f32_src = src_dtype == DSV3_TENSOR_F32;
    const int bf16_dst = dst_dtype == DSV3_TENSOR_BF16, bf16_src = src_dtype == DSV3_TENSOR_BF16;
    DSV3_CHECK((f32_dst || bf16_dst) && (f32_src || bf16_src) && (f32_dst || f32_src),
               DSV3_ERR_USAGE,
               "convert: from dtype %d to dtype %d: the CPU converts f32 to f32, f32 to bf16 and "
               "bf16 to f32",
               (int)src_dtype, (int)dst_dtype);
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "convert: n = %" PRId64 ", expected n >= 0", n);
    if (n == 0) return DSV3_OK;
    DSV3_CHECK(dst != NULL && src != NULL, DSV3_ERR_USAGE, "convert: dst and src must not be NULL");
    const uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src;
    const uintptr_t d_end = d + (uintptr_t)n * dtype_size(dst_dtype);
    const uintptr_t s_end = s + (uintptr_t)n * dtype_size(src_dtype);
    DSV3_CHECK(d_end <= s || s_end <= d, DSV3_ERR_USAGE,
               "convert: dst and src overlap (convert into another buffer)");
    return DSV3_OK;
}
