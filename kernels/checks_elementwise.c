// checks_elementwise: the shared argument checks of add, copy_columns, convert, SwiGLU and the
// memory ops (copy, zero).
#include <inttypes.h>
#include <stdint.h>

#include "kernels/checks.h"

// Bytes per element: the dtypes of kernels.h are f32 and bf16 (checked before).
enum { F32_BYTES = 4, BF16_BYTES = 2 };

Dsv3Err dsv3_check_add(const void *out, const void *a, const void *b, int64_t n) {
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "add: n = %" PRId64 ", expected n >= 0", n);
    if (n == 0) return DSV3_OK;
    DSV3_CHECK(out != NULL && a != NULL && b != NULL, DSV3_ERR_USAGE,
               "add: out, a and b must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_copy_columns(const void *dst, int64_t dst_stride, const void *src,
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

static uintptr_t dtype_bytes(Dsv3TensorDtype dtype) {
    return dtype == DSV3_TENSOR_BF16 ? BF16_BYTES : F32_BYTES;
}

Dsv3Err dsv3_check_convert(const void *dst, Dsv3TensorDtype dst_dtype, const void *src,
                           Dsv3TensorDtype src_dtype, int64_t n) {
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "convert: n = %" PRId64 ", expected n >= 0", n);
    if (n == 0) return DSV3_OK;
    DSV3_CHECK(dst != NULL && src != NULL, DSV3_ERR_USAGE, "convert: dst and src must not be NULL");
    const uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src;
    const uintptr_t d_end = d + (uintptr_t)n * dtype_bytes(dst_dtype);
    const uintptr_t s_end = s + (uintptr_t)n * dtype_bytes(src_dtype);
    DSV3_CHECK(d_end <= s || s_end <= d, DSV3_ERR_USAGE,
               "convert: dst and src overlap (convert into another buffer)");
    return DSV3_OK;
}

static Dsv3Err swiglu_check_sizes(int64_t N, int64_t F) {
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "swiglu: N = %" PRId64 " rows, expected N >= 0", N);
    DSV3_CHECK(F > 0, DSV3_ERR_USAGE, "swiglu: F = %" PRId64 ", expected F > 0", F);
    return DSV3_OK;
}

Dsv3Err dsv3_check_swiglu_forward(const void *h, const void *a, const void *b, int64_t N,
                                  int64_t F) {
    DSV3_CALL(swiglu_check_sizes(N, F));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(h != NULL && a != NULL && b != NULL, DSV3_ERR_USAGE,
               "swiglu_forward: h, a and b must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_swiglu_backward(const void *da, const void *db, const void *dh, const void *a,
                                   const void *b, int64_t N, int64_t F) {
    DSV3_CALL(swiglu_check_sizes(N, F));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(da != NULL && db != NULL && dh != NULL && a != NULL && b != NULL, DSV3_ERR_USAGE,
               "swiglu_backward: da, db, dh, a and b must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_memory_copy(const void *dst, const void *src, size_t bytes, Dsv3CopyKind kind) {
    DSV3_CHECK(kind == DSV3_COPY_HOST_TO_DEVICE || kind == DSV3_COPY_DEVICE_TO_HOST ||
                   kind == DSV3_COPY_DEVICE_TO_DEVICE,
               DSV3_ERR_USAGE, "memory_copy: kind = %d is not a Dsv3CopyKind", (int)kind);
    if (bytes == 0) return DSV3_OK;
    DSV3_CHECK(dst != NULL && src != NULL, DSV3_ERR_USAGE,
               "memory_copy: dst and src must not be NULL (%zu bytes)", bytes);
    return DSV3_OK;
}

Dsv3Err dsv3_check_memory_zero(const void *dst, size_t bytes) {
    DSV3_CHECK(bytes == 0 || dst != NULL, DSV3_ERR_USAGE, "memory_zero: dst is NULL (%zu bytes)",
               bytes);
    return DSV3_OK;
}
