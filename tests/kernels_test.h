// kernels_test: what the kernel tests share — a context per CPU backend, a workspace sized for
// each call by dsv3_workspace_bytes (as a caller of the op library sizes its own), and
// reproducible random inputs.
//
// SIZED(&ctx, OP, .N = …) gives the context with a workspace of exactly what op DSV3_OP_OP
// needs for that shape (with the OpenMP thread count at the call), so that an op that writes
// past what it asked for meets the end of its allocation (and AddressSanitizer). Header only,
// for the test programs; not part of the op library.
#ifndef DSV3_TESTS_KERNELS_TEST_H
#define DSV3_TESTS_KERNELS_TEST_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/core/error.h"
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

// The fast and the reference CPU contexts, without workspaces: 0, or -1 after printing why
// (for a CMocka fixture).
static inline int kernels_test_contexts_create(Dsv3KernelContext *cpu,
                                               Dsv3KernelContext *reference) {
    if (dsv3_kernel_context_create(cpu, DSV3_BACKEND_CPU, KERNELS_TEST_NO_DEVICE) != DSV3_OK ||
        dsv3_kernel_context_create(reference, DSV3_BACKEND_CPU_REFERENCE, KERNELS_TEST_NO_DEVICE) !=
            DSV3_OK) {
        fprintf(stderr, "%s\n", dsv3_error_text());
        return -1;
    }
    return 0;
}

static inline void kernels_test_contexts_destroy(Dsv3KernelContext *cpu,
                                                 Dsv3KernelContext *reference) {
    kernels_test_release(cpu);
    kernels_test_release(reference);
}

// splitmix64: the same numbers on every machine, from *state.
static inline uint64_t kernels_test_rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Uniform in [−scale, scale).
static inline float kernels_test_uniform(uint64_t *state, float scale) {
    return scale *
           (float)((double)(kernels_test_rng_next(state) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

// ‖got − want‖ / ‖want‖ in double (the absolute ‖got − want‖ when want is all zeros).
static inline double kernels_test_relative_error(const float *got, const float *want,
                                                 int64_t count) {
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < count; i++) {
        const double d = (double)got[i] - want[i];
        diff += d * d;
        norm += (double)want[i] * want[i];
    }
    return norm == 0 ? sqrt(diff) : sqrt(diff / norm);
}

#endif
