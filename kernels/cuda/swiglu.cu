// swiglu.cu: the SwiGLU gate h = silu(a) · b and its gradient on the GPU (CUDA versions of
// kernels.h's swiglu_forward and swiglu_backward), for fp32 or bf16 tensors, computed in fp32.
//
// silu(a) = a · σ(a), σ(a) = 1 / (1 + e^−a); d silu / da = σ(a) · (1 + a · (1 − σ(a))):
//   h = silu(a) · b,   da = dh · b · σ(a) · (1 + a · (1 − σ(a))),   db = dh · silu(a).
// Element-wise, grid-stride loops. expf is the accurate one (no fast math): for a → −∞, e^−a
// overflows to +inf and σ(a) = 1 / inf = 0, the right limit, with no special case. In the
// backward each thread reads a, b and dh of an element before writing da and db, so da may
// alias a and db may alias b, as kernels.h allows.
//
// Not here: the routed experts' gate, which experts.cu computes on its own rows.
//
// Legend: N rows (tokens or routed rows), F hidden width.
#include <math.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

enum { SWIGLU_THREADS = CUDA_THREADS };

// ---- forward ----

// h (count) = silu(a) · b.
template <typename T>
static __global__ void swiglu_forward_kernel(T *h, const T *a, const T *b, int64_t count) {
    for (int64_t i = cuda_grid_first(); i < count; i += cuda_grid_stride()) {
        const float x = cuda_load(a, i);
        cuda_store(h, i, x * cuda_sigmoid(x) * cuda_load(b, i));
    }
}

template <typename T>
static Dsv3Err swiglu_forward_launch(const Dsv3KernelContext *ctx, void *h, const void *a,
                                     const void *b, int64_t count) {
    swiglu_forward_kernel<T>
        <<<cuda_blocks(count, SWIGLU_THREADS), SWIGLU_THREADS, 0, cuda_stream(ctx)>>>(
            (T *)h, (const T *)a, (const T *)b, count);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_swiglu_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                            void *h, const void *a, const void *b, int64_t N,
                                            int64_t F) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "swiglu_forward"));
    DSV3_CALL(dsv3_check_swiglu_forward(h, a, b, N, F));
    if (N == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16 ? swiglu_forward_launch<__nv_bfloat16>(ctx, h, a, b, N * F)
                                     : swiglu_forward_launch<float>(ctx, h, a, b, N * F);
}

// ---- backward ----

// da, db (count) from dh, a, b (count); every input of an element read before its outputs are
// written (da may alias a, db may alias b).
template <typename T>
static __global__ void swiglu_backward_kernel(T *da, T *db, const T *dh, const T *a, const T *b,
                                              int64_t count) {
    for (int64_t i = cuda_grid_first(); i < count; i += cuda_grid_stride()) {
        const float x = cuda_load(a, i), y = cuda_load(b, i), g = cuda_load(dh, i);
        const float s = cuda_sigmoid(x);
        cuda_store(da, i, g * y * s * (1.0f + x * (1.0f - s)));
        cuda_store(db, i, g * x * s);
    }
}

template <typename T>
static Dsv3Err swiglu_backward_launch(const Dsv3KernelContext *ctx, void *da, void *db,
                                      const void *dh, const void *a, const void *b, int64_t count) {
    swiglu_backward_kernel<T>
        <<<cuda_blocks(count, SWIGLU_THREADS), SWIGLU_THREADS, 0, cuda_stream(ctx)>>>(
            (T *)da, (T *)db, (const T *)dh, (const T *)a, (const T *)b, count);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_swiglu_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                             void *da, void *db, const void *dh, const void *a,
                                             const void *b, int64_t N, int64_t F) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "swiglu_backward"));
    DSV3_CALL(dsv3_check_swiglu_backward(da, db, dh, a, b, N, F));
    if (N == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16
               ? swiglu_backward_launch<__nv_bfloat16>(ctx, da, db, dh, a, b, N * F)
               : swiglu_backward_launch<float>(ctx, da, db, dh, a, b, N * F);
}
