// backend_cuda: the table of the CUDA backend (DSV3_BACKEND_CUDA), what a CUDA context holds
// (its device, stream, cuBLASLt handle and workspace, fault record, reduction scratch), and the
// checks every CUDA op makes of its dtype and workspace.
//
// Not here: the ops (one file per group), the memory ops (memory.cu), the GEMM (gemm.cu).
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_kernels.cuh"

#define BACKEND_CUDA_ENTRY(ID, name, params, args) dsv3_cuda_##name,
extern "C" const Dsv3KernelOps dsv3_cuda_ops = {"cuda", DSV3_KERNEL_OPS(BACKEND_CUDA_ENTRY)};
#undef BACKEND_CUDA_ENTRY

// cuBLASLt's scratch per context: NVIDIA recommends 32 MiB on Hopper for its fastest kernels.
static const size_t BACKEND_CUDA_LT_WORKSPACE_BYTES = (size_t)32 << 20;

// Releases what create made, in reverse order; safe on a half-made state.
static void backend_cuda_state_release(CudaState *s) {
    if (s == NULL) return;
    if (s->reduce_partials) (void)cudaFree(s->reduce_partials);
    if (s->fault) (void)cudaFree(s->fault);
    if (s->lt_workspace) (void)cudaFree(s->lt_workspace);
    if (s->lt) (void)cublasLtDestroy(s->lt);
    dsv3_free(s);
}

static Dsv3Err backend_cuda_state_create(CudaState *s) {
    CUBLAS_CALL(cublasLtCreate(&s->lt));
    CUDA_CALL(cudaMalloc(&s->lt_workspace, BACKEND_CUDA_LT_WORKSPACE_BYTES));
    s->lt_workspace_bytes = BACKEND_CUDA_LT_WORKSPACE_BYTES;
    CUDA_CALL(cudaMalloc((void **)&s->fault, sizeof *s->fault));
    CUDA_CALL(cudaMemset(s->fault, 0, sizeof *s->fault));
    CUDA_CALL(cudaMalloc((void **)&s->reduce_partials, CUDA_REDUCE_BLOCKS * sizeof(double)));
    // cudaMemset runs on the legacy default stream, which the context's non-blocking stream does
    // not wait for: the record must be zero before an op can record a fault in it.
    CUDA_CALL(cudaDeviceSynchronize());
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_context_create(Dsv3KernelContext *ctx, int device) {
    int count = 0;
    DSV3_CALL(dsv3_cuda_device_count(&count));
    // No GPU is the machine's state, not the caller's mistake (kernels.h: a device that cannot
    // be used is a backend error); a device number beyond those there is a usage error.
    DSV3_CHECK(count > 0, DSV3_ERR_BACKEND,
               "kernel context for backend cuda (device %d): this process sees no CUDA device "
               "(no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them); use backend cpu",
               device);
    DSV3_CALL(dsv3_cuda_device_select(device));
    CudaState *s = NULL;
    DSV3_CALL(dsv3_calloc((void **)&s, 1, sizeof *s, "CUDA context state"));
    Dsv3Err err = backend_cuda_state_create(s);
    cudaStream_t stream = NULL;
    if (err == DSV3_OK) {
        const cudaError_t rc = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
        if (rc != cudaSuccess)
            err = dsv3_error_raise(DSV3_ERR_BACKEND, __FILE__, __LINE__, __func__,
                                   "cudaStreamCreateWithFlags on device %d failed: %s", device,
                                   cudaGetErrorString(rc));
    }
    if (err != DSV3_OK) {
        backend_cuda_state_release(s);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    ctx->stream = stream;
    ctx->blas = s;
    return DSV3_OK;
}

extern "C" void dsv3_cuda_context_destroy(Dsv3KernelContext *ctx) {
    // Work still queued on the stream may use the state: let it finish first.
    if (ctx->stream) {
        (void)cudaStreamSynchronize(cuda_stream(ctx));
        (void)cudaStreamDestroy(cuda_stream(ctx));
    }
    backend_cuda_state_release(cuda_state(ctx));
    ctx->stream = NULL;
    ctx->blas = NULL;
}

Dsv3Err dsv3_cuda_check_dtype(Dsv3TensorDtype dtype, const char *op) {
    DSV3_CHECK(dtype == DSV3_TENSOR_F32 || dtype == DSV3_TENSOR_BF16, DSV3_ERR_USAGE,
               "%s: dtype %d is neither DSV3_TENSOR_F32 nor DSV3_TENSOR_BF16", op, (int)dtype);
    return DSV3_OK;
}

Dsv3Err dsv3_cuda_check_workspace(const Dsv3KernelContext *ctx, size_t need, const char *op) {
    DSV3_CHECK(need == 0 || (ctx->workspace != NULL && ctx->workspace_bytes >= need),
               DSV3_ERR_USAGE,
               "%s: needs %zu bytes of workspace and the context has %zu (size ctx->workspace "
               "with dsv3_workspace_bytes)",
               op, need, ctx->workspace != NULL ? ctx->workspace_bytes : (size_t)0);
    return DSV3_OK;
}
