// dispatch: the public functions of kernels.h — contexts, names, and one function per op that
// checks the context and calls its backend's table (backend.h).
//
// The CUDA table and its context functions come from kernels/cuda, built when nvcc is found
// (DSV3_HAVE_CUDA); a build without it refuses CUDA contexts.
#include <stddef.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/kernels.h"

#if defined(DSV3_HAVE_CUDA)
#define DISPATCH_CUDA 1
#else
#define DISPATCH_CUDA 0
#endif

// A CPU context has no device.
enum { DISPATCH_NO_DEVICE = -1 };

const char *dsv3_backend_name(Dsv3Backend backend) {
    switch (backend) {
    case DSV3_BACKEND_CPU: return "cpu";
    case DSV3_BACKEND_CPU_REFERENCE: return "cpu-reference";
    case DSV3_BACKEND_CUDA: return "cuda";
    }
    return "unknown";
}

int dsv3_backend_built(Dsv3Backend backend) {
    switch (backend) {
    case DSV3_BACKEND_CPU:
    case DSV3_BACKEND_CPU_REFERENCE: return 1;
    case DSV3_BACKEND_CUDA: return DISPATCH_CUDA;
    }
    return 0;
}

#define DISPATCH_OP_NAME(ID, name, params, args) #name,
static const char *const dispatch_op_names[] = {DSV3_KERNEL_OPS(DISPATCH_OP_NAME)};
#undef DISPATCH_OP_NAME
_Static_assert(sizeof dispatch_op_names / sizeof dispatch_op_names[0] == DSV3_OP_COUNT,
               "one name per op");

const char *dsv3_op_name(Dsv3Op op) {
    return (int)op >= 0 && op < DSV3_OP_COUNT ? dispatch_op_names[op] : "unknown op";
}

// The backend's table (and, on CUDA, its device state) in ctx.
static Dsv3Err dispatch_backend_create(Dsv3KernelContext *ctx, Dsv3Backend backend, int device) {
    switch (backend) {
    case DSV3_BACKEND_CPU: ctx->ops = &dsv3_cpu_ops; return DSV3_OK;
    case DSV3_BACKEND_CPU_REFERENCE: ctx->ops = &dsv3_cpu_reference_ops; return DSV3_OK;
    case DSV3_BACKEND_CUDA:
#if DISPATCH_CUDA
        ctx->ops = &dsv3_cuda_ops;
        ctx->device = device;
        return dsv3_cuda_context_create(ctx, device);
#else
        DSV3_RAISE(DSV3_ERR_USAGE,
                   "kernel context for backend cuda (device %d): this build has no CUDA (nvcc "
                   "was not found when it was configured; see meson option cuda); use backend cpu",
                   device);
#endif
    }
    DSV3_RAISE(DSV3_ERR_USAGE, "kernel context: unknown backend %d (expected 0 to %d)",
               (int)backend, DSV3_BACKEND_COUNT - 1);
}

Dsv3Err dsv3_kernel_context_create(Dsv3KernelContext *ctx, Dsv3Backend backend, int device) {
    DSV3_CHECK(ctx != NULL, DSV3_ERR_USAGE, "kernel context: ctx is NULL");
    memset(ctx, 0, sizeof *ctx);
    ctx->backend = backend;
    ctx->device = DISPATCH_NO_DEVICE;
    Dsv3Err err = dispatch_backend_create(ctx, backend, device);
    if (err == DSV3_OK)
        err = ctx->ops->memory_alloc(ctx, &ctx->scalars, DSV3_CONTEXT_SCALARS * sizeof(double),
                                     "scalar results");
    if (err != DSV3_OK) {
        dsv3_kernel_context_destroy(ctx);
        memset(ctx, 0, sizeof *ctx);
        ctx->device = DISPATCH_NO_DEVICE;
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    return DSV3_OK;
}

Dsv3Err dsv3_scalar_read(const Dsv3KernelContext *ctx, void *host, const void *scalar,
                         size_t bytes) {
    DSV3_CALL(dsv3_memory_copy(ctx, host, scalar, bytes, DSV3_COPY_DEVICE_TO_HOST));
    DSV3_CALL(dsv3_synchronize(ctx));
    return DSV3_OK;
}

Dsv3Err dsv3_kernel_context_set_matmul(Dsv3KernelContext *ctx, Dsv3TensorDtype dtype) {
    DSV3_CHECK(ctx != NULL && ctx->ops != NULL, DSV3_ERR_USAGE,
               "kernel context: set_matmul needs a context made by dsv3_kernel_context_create");
    DSV3_CHECK(dtype == DSV3_TENSOR_F32 || dtype == DSV3_TENSOR_BF16, DSV3_ERR_USAGE,
               "kernel context: matmul dtype %d is neither f32 nor bf16", (int)dtype);
    if (dtype == DSV3_TENSOR_BF16) {
        const char *why = "";
        DSV3_CHECK(ctx->backend != DSV3_BACKEND_CPU_REFERENCE, DSV3_ERR_USAGE,
                   "kernel context: the cpu-reference backend computes GEMMs in fp32 only");
        // CUDA GEMMs compute in bf16 on every GPU this build targets (sm_80 and later).
        DSV3_CHECK(ctx->backend == DSV3_BACKEND_CUDA || dsv3_cpu_gemm_bf16_supported(&why),
                   DSV3_ERR_USAGE,
                   "kernel context: the cpu backend cannot compute GEMMs in bf16 here: %s", why);
    }
    ctx->matmul_dtype = dtype;
    return DSV3_OK;
}

void dsv3_kernel_context_destroy(Dsv3KernelContext *ctx) {
    if (ctx == NULL || ctx->ops == NULL) return;
    if (ctx->scalars) (void)ctx->ops->memory_free(ctx, ctx->scalars);
    ctx->scalars = NULL;
#if DISPATCH_CUDA
    if (ctx->backend == DSV3_BACKEND_CUDA) dsv3_cuda_context_destroy(ctx);
#endif
    // The workspace is the caller's: it stays, to be freed with the memory functions of a
    // live context (before this call) or by whoever allocated it.
    ctx->ops = NULL;
    ctx->stream = NULL;
    ctx->blas = NULL;
}

static Dsv3Err dispatch_check(const Dsv3KernelContext *ctx, const char *op) {
    DSV3_CHECK(ctx != NULL, DSV3_ERR_USAGE, "%s: ctx is NULL", op);
    DSV3_CHECK(ctx->ops != NULL, DSV3_ERR_USAGE,
               "%s: the kernel context has no backend (make it with dsv3_kernel_context_create)",
               op);
    return DSV3_OK;
}

#define DISPATCH_OP(ID, name, params, args)                                                        \
    Dsv3Err dsv3_##name params {                                                                   \
        DSV3_CALL(dispatch_check(ctx, #name));                                                     \
        if (!dsv3_profiling) {                                                                     \
            DSV3_CALL(ctx->ops->name args);                                                        \
            return DSV3_OK;                                                                        \
        }                                                                                          \
        dsv3_profile_enter(DSV3_OP_##ID);                                                          \
        const double start = dsv3_profile_now();                                                   \
        const Dsv3Err err = ctx->ops->name args;                                                   \
        dsv3_profile_op(DSV3_OP_##ID, start, dsv3_profile_now());                                  \
        DSV3_CALL(err);                                                                            \
        return DSV3_OK;                                                                            \
    }
DSV3_KERNEL_OPS(DISPATCH_OP)
#undef DISPATCH_OP
