// memory: the memory ops of both CPU backends. The context's memory space is host memory:
// allocations are counted and 64-byte aligned (common/core/alloc.h), every copy direction is a
// memcpy, and nothing is asynchronous, so synchronize has nothing to wait for. The reference
// table uses the same functions (there is nothing simpler to compare them with).
#include <stdint.h>
#include <string.h>

#include "common/core/alloc.h"
#include "kernels/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_memory_alloc(const Dsv3KernelContext *ctx, void **out, size_t bytes,
                              const char *what) {
    (void)ctx;
    DSV3_CHECK(out != NULL, DSV3_ERR_USAGE, "memory_alloc: out is NULL");
    DSV3_CALL(dsv3_alloc(out, bytes, what != NULL ? what : "kernel memory"));
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_memory_free(const Dsv3KernelContext *ctx, void *p) {
    (void)ctx;
    dsv3_free(p);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_memory_copy(const Dsv3KernelContext *ctx, void *dst, const void *src, size_t bytes,
                             Dsv3CopyKind kind) {
    (void)ctx;
    DSV3_CALL(dsv3_check_memory_copy(dst, src, bytes, kind));
    if (bytes == 0) return DSV3_OK;
    memcpy(dst, src, bytes);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_memory_zero(const Dsv3KernelContext *ctx, void *dst, size_t bytes) {
    (void)ctx;
    DSV3_CALL(dsv3_check_memory_zero(dst, bytes));
    if (bytes == 0) return DSV3_OK;
    memset(dst, 0, bytes);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_synchronize(const Dsv3KernelContext *ctx) {
    (void)ctx;
    return DSV3_OK;
}

// The reference table's entries: the same functions.
Dsv3Err dsv3_cpu_reference_memory_alloc(const Dsv3KernelContext *ctx, void **out, size_t bytes,
                                        const char *what) {
    return dsv3_cpu_memory_alloc(ctx, out, bytes, what);
}

Dsv3Err dsv3_cpu_reference_memory_free(const Dsv3KernelContext *ctx, void *p) {
    return dsv3_cpu_memory_free(ctx, p);
}

Dsv3Err dsv3_cpu_reference_memory_copy(const Dsv3KernelContext *ctx, void *dst, const void *src,
                                       size_t bytes, Dsv3CopyKind kind) {
    return dsv3_cpu_memory_copy(ctx, dst, src, bytes, kind);
}

Dsv3Err dsv3_cpu_reference_memory_zero(const Dsv3KernelContext *ctx, void *dst, size_t bytes) {
    return dsv3_cpu_memory_zero(ctx, dst, bytes);
}

Dsv3Err dsv3_cpu_reference_synchronize(const Dsv3KernelContext *ctx) {
    return dsv3_cpu_synchronize(ctx);
}
