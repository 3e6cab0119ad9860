// elementwise.cu: element-wise sums and column copies on the GPU (CUDA versions of kernels.h's
// add and copy_columns), for fp32 or bf16 tensors.
//
// add reads both operands as fp32, sums in fp32 and stores in the tensor's dtype (rounded to
// nearest even for bf16); out may alias a or b, since every element is read and written by the
// same thread. copy_columns moves elements without converting them (bit-exact). Both are
// grid-stride loops over the elements.
//
// Not here: conversions between dtypes (memory.cu's convert).
//
// Legend: n elements; rows × cols the copied block, strides in elements.
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

enum { ELEMENTWISE_THREADS = CUDA_THREADS };

// ---- add ----

// out (n) = a (n) + b (n), summed in fp32.
template <typename T> static __global__ void add_kernel(T *out, const T *a, const T *b, int64_t n) {
    for (int64_t i = cuda_grid_first(); i < n; i += cuda_grid_stride())
        cuda_store(out, i, cuda_load(a, i) + cuda_load(b, i));
}

template <typename T>
static Dsv3Err add_launch(const Dsv3KernelContext *ctx, void *out, const void *a, const void *b,
                          int64_t n) {
    add_kernel<T>
        <<<cuda_blocks(n, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, cuda_stream(ctx)>>>(
            (T *)out, (const T *)a, (const T *)b, n);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_add(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out,
                                 const void *a, const void *b, int64_t n) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "add"));
    DSV3_CALL(dsv3_check_add(out, a, b, n));
    if (n == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16 ? add_launch<__nv_bfloat16>(ctx, out, a, b, n)
                                     : add_launch<float>(ctx, out, a, b, n);
}

// ---- copy_columns ----

// dst[r·dst_stride + c] = src[r·src_stride + c] for the rows × cols elements of the block,
// element i of the block being (r, c) = (i / cols, i % cols).
template <typename T>
static __global__ void copy_columns_kernel(T *dst, int64_t dst_stride, const T *src,
                                           int64_t src_stride, int64_t rows, int64_t cols) {
    const int64_t count = rows * cols;
    for (int64_t i = cuda_grid_first(); i < count; i += cuda_grid_stride()) {
        const int64_t r = i / cols, c = i - r * cols;
        dst[r * dst_stride + c] = src[r * src_stride + c];
    }
}

template <typename T>
static Dsv3Err copy_columns_launch(const Dsv3KernelContext *ctx, void *dst, int64_t dst_stride,
                                   const void *src, int64_t src_stride, int64_t rows,
                                   int64_t cols) {
    copy_columns_kernel<T>
        <<<cuda_blocks(rows * cols, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0,
           cuda_stream(ctx)>>>((T *)dst, dst_stride, (const T *)src, src_stride, rows, cols);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_copy_columns(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                          void *dst, int64_t dst_stride, const void *src,
                                          int64_t src_stride, int64_t rows, int64_t cols) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "copy_columns"));
    DSV3_CALL(dsv3_check_copy_columns(dst, dst_stride, src, src_stride, rows, cols));
    if (rows == 0 || cols == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16
               ? copy_columns_launch<__nv_bfloat16>(ctx, dst, dst_stride, src, src_stride, rows,
                                                    cols)
               : copy_columns_launch<float>(ctx, dst, dst_stride, src, src_stride, rows, cols);
}
