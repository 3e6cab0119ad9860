// kernels_workspace: what the kernel tests share — a context per CPU backend, and a workspace
// sized for each call by dsv3_workspace_bytes, as a caller of the op library sizes its own.
//
// SIZED(&ctx, OP, .N = …) gives the context with a workspace of exactly what op DSV3_OP_OP
// needs for that shape (with the OpenMP thread count at the call), so that an op that writes
// past what it asked for meets the end of its allocation (and AddressSanitizer). Header only,
// for the test programs; not part of the op library.
#ifndef DSV3_TESTS_KERNELS_WORKSPACE_H
#define DSV3_TESTS_KERNELS_WORKSPACE_H

#include <stddef.h>

#include "kernels/kernels.h"

// The CPU backends have no device.
enum { KERNELS_TEST_NO_DEVICE = -1 };

// ctx's workspace resized to exactly what `op` needs for `shape` (freed when 0 bytes).
static inline Dsv3Err kernels_test_reserve(Dsv3KernelContext *ctx, Dsv3Op op,
                                           const Dsv3OpShape *shape) {
    size_t need = 0;
    DSV3_CALL(dsv3_workspace_bytes(ctx, op, shape, &need));
    if (need == ctx->workspace_bytes && (need == 0) == (ctx->workspace == NULL)) return DSV3_OK;
    DSV3_CALL(dsv3_memory_free(ctx, ctx->workspace));
    ctx->workspace = NULL;
    ctx->workspace_bytes = 0;
    if (need == 0) return DSV3_OK;
    DSV3_CALL(dsv3_memory_alloc(ctx, &ctx->workspace, need, "test workspace"));
    ctx->workspace_bytes = need;
    return DSV3_OK;
}

// ctx, sized for one call; NULL (which the op then refuses) when that fails.
static inline const Dsv3KernelContext *kernels_test_sized(Dsv3KernelContext *ctx, Dsv3Op op,
                                                          Dsv3OpShape shape) {
    return kernels_test_reserve(ctx, op, &shape) == DSV3_OK ? ctx : NULL;
}

#define SIZED(ctx, OP, ...) kernels_test_sized((ctx), DSV3_OP_##OP, (Dsv3OpShape){__VA_ARGS__})

// Frees ctx's workspace (the next SIZED call makes a new one).
static inline void kernels_test_free_workspace(Dsv3KernelContext *ctx) {
    if (ctx->ops != NULL) (void)dsv3_memory_free(ctx, ctx->workspace);
    ctx->workspace = NULL;
    ctx->workspace_bytes = 0;
}

// Frees ctx's workspace and destroys it.
static inline void kernels_test_release(Dsv3KernelContext *ctx) {
    kernels_test_free_workspace(ctx);
    dsv3_kernel_context_destroy(ctx);
}

#endif
