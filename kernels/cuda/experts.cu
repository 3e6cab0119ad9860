// experts.cu: the routed experts (grouped SwiGLU FFNs) on CUDA, forward and backward.
//
// Expert e owns the rows [offsets[e], offsets[e+1]) of xs. offsets lives in device memory (the
// output of moe_plan), but the GEMMs are launched from the host with each expert's row count,
// so every call copies offsets to the host and waits for that copy: one stream synchronisation
// per call. A grouped GEMM that reads offsets on the device is the faster path to come; this
// version runs one dsv3_cuda_gemm per expert and matrix, skipping experts without rows.
//
//   forward:  h1 = xs · w1[e]ᵀ, h3 = xs · w3[e]ᵀ (saved); act = silu(h1) · h3 (workspace);
//             ys = act · w2[e]ᵀ
//   backward: act recomputed from h1, h3; dw2[e] += dysᵀ · act; dact = dys · w2[e];
//             dh1 = dact · h3 · σ(h1) · (1 + h1 · (1 − σ(h1))), dh3 = dact · silu(h1)
//             (the formulas of kernels/cpu/swiglu_reference.c);
//             dw1[e] += dh1ᵀ · xs, dw3[e] += dh3ᵀ · xs; dxs = dh1 · w1[e] + dh3 · w3[e]
// The hidden tensors act, dact, dh1, dh3 are stored in the op's dtype, like h1 and h3; weight
// gradients are fp32 (GEMMs with an fp32 C and beta 1). The element-wise SwiGLU math is this
// file's own kernels (an op does not call another op).
//
// Workspace: forward act (M, F); backward two (M, F) slices: act, then dh3 over it, and dact,
// then dh1 over it. dsv3_cuda_experts_workspace sizes them for fp32 elements, as the shape does
// not say the dtype; a bf16 call takes half.
//
// Legend: E experts, D model width, F expert hidden width, M routed rows (offsets[E]).
#include <inttypes.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

// Experts the host copy of offsets holds (DeepSeek-V3 has 256 routed experts).
enum { EXPERTS_MAX = 256 };

// (M, F) slices of each direction's workspace.
enum { FORWARD_SLICES = 1, BACKWARD_SLICES = 2 };

// ---- sizes and pointers ----

static size_t dtype_bytes(Dsv3TensorDtype dtype) {
    return dtype == DSV3_TENSOR_BF16 ? sizeof(__nv_bfloat16) : sizeof(float);
}

// p + i elements of dtype.
static const void *element_at(const void *p, int64_t i, Dsv3TensorDtype dtype) {
    return (const char *)p + (size_t)i * dtype_bytes(dtype);
}
static void *element_at(void *p, int64_t i, Dsv3TensorDtype dtype) {
    return (char *)p + (size_t)i * dtype_bytes(dtype);
}

// Bytes of one (M, F) slice of `element` bytes, aligned; SIZE_MAX when it cannot exist.
static size_t experts_slice_bytes(int64_t M, int64_t F, size_t element) {
    if (M <= 0 || F <= 0) return 0;
    if ((uint64_t)M > (SIZE_MAX - CUDA_WORKSPACE_ALIGNMENT) / element / (uint64_t)F)
        return SIZE_MAX;
    return cuda_align((size_t)M * (size_t)F * element);
}

static size_t experts_need(int slices, int64_t M, int64_t F, size_t element) {
    const size_t slice = experts_slice_bytes(M, F, element);
    if (slice == SIZE_MAX || slice > SIZE_MAX / (size_t)slices) return SIZE_MAX;
    return (size_t)slices * slice;
}

size_t dsv3_cuda_experts_workspace(Dsv3Op op, const Dsv3OpShape *shape) {
    switch (op) {
    case DSV3_OP_EXPERTS_FORWARD:
        return experts_need(FORWARD_SLICES, shape->M, shape->F, sizeof(float));
    case DSV3_OP_EXPERTS_BACKWARD:
        return experts_need(BACKWARD_SLICES, shape->M, shape->F, sizeof(float));
    default: return 0;
    }
}

// ---- the SwiGLU kernels ----

// act (n) = silu(h1) · h3.
template <typename T>
static __global__ void swiglu_forward_kernel(T *act, const T *h1, const T *h3, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float a = cuda_load(h1, i);
        cuda_store(act, i, a * cuda_sigmoid(a) * cuda_load(h3, i));
    }
}

// From dact (n, in dh1) and h1, h3: dh1 written over dact, dh3 (n) written (over act). Each
// thread reads its element before it writes it, so the in-place update is safe.
template <typename T>
static __global__ void swiglu_backward_kernel(T *dh1, T *dh3, const T *h1, const T *h3, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float a = cuda_load(h1, i), b = cuda_load(h3, i), g = cuda_load(dh1, i);
        const float s = cuda_sigmoid(a);
        cuda_store(dh1, i, g * b * s * (1.0f + a * (1.0f - s)));
        cuda_store(dh3, i, g * a * s);
    }
}

static Dsv3Err swiglu_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *act,
                              const void *h1, const void *h3, int64_t n) {
    const unsigned blocks = cuda_blocks(n, CUDA_THREADS);
    if (dtype == DSV3_TENSOR_BF16)
        swiglu_forward_kernel<<<blocks, CUDA_THREADS, 0, cuda_stream(ctx)>>>(
            (__nv_bfloat16 *)act, (const __nv_bfloat16 *)h1, (const __nv_bfloat16 *)h3, n);
    else
        swiglu_forward_kernel<<<blocks, CUDA_THREADS, 0, cuda_stream(ctx)>>>(
            (float *)act, (const float *)h1, (const float *)h3, n);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

static Dsv3Err swiglu_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dh1,
                               void *dh3, const void *h1, const void *h3, int64_t n) {
    const unsigned blocks = cuda_blocks(n, CUDA_THREADS);
    if (dtype == DSV3_TENSOR_BF16)
        swiglu_backward_kernel<<<blocks, CUDA_THREADS, 0, cuda_stream(ctx)>>>(
            (__nv_bfloat16 *)dh1, (__nv_bfloat16 *)dh3, (const __nv_bfloat16 *)h1,
            (const __nv_bfloat16 *)h3, n);
    else
        swiglu_backward_kernel<<<blocks, CUDA_THREADS, 0, cuda_stream(ctx)>>>(
            (float *)dh1, (float *)dh3, (const float *)h1, (const float *)h3, n);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// ---- checks and the host copy of offsets ----

// The sizes (the shared checks), then offsets (E + 1, device) copied into host (the one wait
// of the op) and checked there as the CPU checks them: offsets[0] = 0, non-decreasing.
static Dsv3Err experts_read_offsets(const Dsv3KernelContext *ctx, int64_t *host,
                                    const int64_t *offsets, int64_t E, int64_t D, int64_t F) {
    DSV3_CALL(dsv3_check_experts_sizes(offsets, E, D, F));
    DSV3_CHECK(E <= EXPERTS_MAX, DSV3_ERR_USAGE,
               "experts: E = %" PRId64 " experts, the CUDA backend takes at most %d per call", E,
               (int)EXPERTS_MAX);
    CUDA_CALL(cudaMemcpyAsync(host, offsets, (size_t)(E + 1) * sizeof(int64_t),
                              cudaMemcpyDeviceToHost, cuda_stream(ctx)));
    CUDA_CALL(cudaStreamSynchronize(cuda_stream(ctx)));
    return dsv3_check_experts_offsets(host, E);
}

// ctx's workspace holds `slices` (M, F) slices of dtype; *first and *second (when not NULL) get
// the first two.
static Dsv3Err experts_workspace(const Dsv3KernelContext *ctx, const char *op, int slices,
                                 Dsv3TensorDtype dtype, int64_t M, int64_t F, void **first,
                                 void **second) {
    const size_t element = dtype_bytes(dtype);
    DSV3_CALL(dsv3_cuda_check_workspace(ctx, experts_need(slices, M, F, element), op));
    *first = ctx->workspace;
    if (second) *second = (char *)ctx->workspace + experts_slice_bytes(M, F, element);
    return DSV3_OK;
}

// ---- the ops ----

extern "C" Dsv3Err dsv3_cuda_experts_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                             void *ys, void *h1, void *h3, const void *xs,
                                             const void *w1, const void *w2, const void *w3,
                                             const int64_t *offsets, int64_t E, int64_t D,
                                             int64_t F) {
    // ys (M, D), h1, h3 (M, F), xs (M, D); w1, w3 (E, F, D), w2 (E, D, F); all of dtype
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "experts_forward"));
    int64_t rows[EXPERTS_MAX + 1]; // offsets, on the host
    DSV3_CALL(experts_read_offsets(ctx, rows, offsets, E, D, F));
    const int64_t M = rows[E];
    DSV3_CALL(dsv3_check_experts_forward(ys, h1, h3, xs, w1, w2, w3, M));
    if (M == 0) return DSV3_OK;
    void *act = NULL; // (M, F) silu(h1) · h3
    DSV3_CALL(experts_workspace(ctx, "experts_forward", FORWARD_SLICES, dtype, M, F, &act, NULL));

    for (int64_t e = 0; e < E; e++) {
        const int64_t m0 = rows[e], Me = rows[e + 1] - rows[e];
        if (Me == 0) continue;
        const void *x = element_at(xs, m0 * D, dtype); // (Me, D)
        DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_TRANS, Me, F, D, 1.0f, x, D,
                                 element_at(w1, e * F * D, dtype), D, dtype, 0.0f,
                                 element_at(h1, m0 * F, dtype), F, dtype));
        DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_TRANS, Me, F, D, 1.0f, x, D,
                                 element_at(w3, e * F * D, dtype), D, dtype, 0.0f,
                                 element_at(h3, m0 * F, dtype), F, dtype));
    }
    DSV3_CALL(swiglu_forward(ctx, dtype, act, h1, h3, M * F));
    for (int64_t e = 0; e < E; e++) {
        const int64_t m0 = rows[e], Me = rows[e + 1] - rows[e];
        if (Me == 0) continue;
        DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_TRANS, Me, D, F, 1.0f,
                                 element_at(act, m0 * F, dtype), F,
                                 element_at(w2, e * D * F, dtype), F, dtype, 0.0f,
                                 element_at(ys, m0 * D, dtype), D, dtype));
    }
    return DSV3_OK;
}

// Backward, first half, for expert e's rows [m0, m0 + Me): dw2[e] += dysᵀ · act and
// dact = dys · w2[e].
static Dsv3Err experts_backward_down(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                     float *dw2, void *dact, const void *act, const void *dys,
                                     const void *w2, int64_t e, int64_t m0, int64_t Me, int64_t D,
                                     int64_t F) {
    const void *dy = element_at(dys, m0 * D, dtype); // (Me, D)
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_TRANS, CUDA_GEMM_NO_TRANS, D, F, Me, 1.0f, dy, D,
                             element_at(act, m0 * F, dtype), F, dtype, 1.0f, dw2 + e * D * F, F,
                             DSV3_TENSOR_F32));
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_NO_TRANS, Me, F, D, 1.0f, dy, D,
                             element_at(w2, e * D * F, dtype), F, dtype, 0.0f,
                             element_at(dact, m0 * F, dtype), F, dtype));
    return DSV3_OK;
}

// Backward, second half, for expert e: dw1[e] += dh1ᵀ · xs, dw3[e] += dh3ᵀ · xs and
// dxs = dh1 · w1[e] + dh3 · w3[e] (written by the first GEMM, added to by the second).
static Dsv3Err experts_backward_up(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dxs,
                                   float *dw1, float *dw3, const void *dh1, const void *dh3,
                                   const void *xs, const void *w1, const void *w3, int64_t e,
                                   int64_t m0, int64_t Me, int64_t D, int64_t F) {
    const void *g1 = element_at(dh1, m0 * F, dtype), *g3 = element_at(dh3, m0 * F, dtype);
    const void *x = element_at(xs, m0 * D, dtype); // (Me, D)
    void *dx = element_at(dxs, m0 * D, dtype);     // (Me, D)
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_TRANS, CUDA_GEMM_NO_TRANS, F, D, Me, 1.0f, g1, F, x, D,
                             dtype, 1.0f, dw1 + e * F * D, D, DSV3_TENSOR_F32));
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_TRANS, CUDA_GEMM_NO_TRANS, F, D, Me, 1.0f, g3, F, x, D,
                             dtype, 1.0f, dw3 + e * F * D, D, DSV3_TENSOR_F32));
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_NO_TRANS, Me, D, F, 1.0f, g1, F,
                             element_at(w1, e * F * D, dtype), D, dtype, 0.0f, dx, D, dtype));
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_NO_TRANS, Me, D, F, 1.0f, g3, F,
                             element_at(w3, e * F * D, dtype), D, dtype, 1.0f, dx, D, dtype));
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_experts_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                              void *dxs, float *dw1, float *dw2, float *dw3,
                                              const void *dys, const void *xs, const void *h1,
                                              const void *h3, const void *w1, const void *w2,
                                              const void *w3, const int64_t *offsets, int64_t E,
                                              int64_t D, int64_t F) {
    // dxs, dys, xs (M, D), h1, h3 (M, F), w1, w3 (E, F, D), w2 (E, D, F) of dtype;
    // dw1, dw3 (E, F, D), dw2 (E, D, F) fp32
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "experts_backward"));
    int64_t rows[EXPERTS_MAX + 1]; // offsets, on the host
    DSV3_CALL(experts_read_offsets(ctx, rows, offsets, E, D, F));
    const int64_t M = rows[E];
    DSV3_CALL(dsv3_check_experts_backward(dxs, dw1, dw2, dw3, dys, xs, h1, h3, w1, w2, w3, M));
    if (M == 0) return DSV3_OK;
    void *act_dh3 = NULL, *dact_dh1 = NULL; // (M, F) each: act then dh3; dact then dh1
    DSV3_CALL(experts_workspace(ctx, "experts_backward", BACKWARD_SLICES, dtype, M, F, &act_dh3,
                                &dact_dh1));

    DSV3_CALL(swiglu_forward(ctx, dtype, act_dh3, h1, h3, M * F));
    for (int64_t e = 0; e < E; e++)
        if (rows[e + 1] > rows[e])
            DSV3_CALL(experts_backward_down(ctx, dtype, dw2, dact_dh1, act_dh3, dys, w2, e, rows[e],
                                            rows[e + 1] - rows[e], D, F));
    DSV3_CALL(swiglu_backward(ctx, dtype, dact_dh1, act_dh3, h1, h3, M * F));
    for (int64_t e = 0; e < E; e++)
        if (rows[e + 1] > rows[e])
            DSV3_CALL(experts_backward_up(ctx, dtype, dxs, dw1, dw3, dact_dh1, act_dh3, xs, w1, w3,
                                          e, rows[e], rows[e + 1] - rows[e], D, F));
    return DSV3_OK;
}
