// checks_context: what every CPU op checks of its context — the dtype of its tensors and the
// size of the workspace —, the arguments of the workspace query, and the layout of workspace
// slices (cpu.h).
#include <stdint.h>

#include "kernels/cpu/cpu.h"

size_t dsv3_cpu_layout_add(Dsv3CpuLayout *layout, int64_t count, size_t size) {
    const size_t n = count > 0 ? (size_t)count : 0;
    const size_t align = DSV3_CPU_WORKSPACE_ALIGNMENT;
    if (layout->bytes > SIZE_MAX - (align - 1)) {
        layout->bytes = SIZE_MAX;
        return SIZE_MAX;
    }
    const size_t offset = (layout->bytes + align - 1) / align * align;
    if (size != 0 && n > (SIZE_MAX - offset) / size) {
        layout->bytes = SIZE_MAX;
        return SIZE_MAX;
    }
    layout->bytes = offset + n * size;
    return offset;
}

static const char *dtype_name(Dsv3TensorDtype dtype) {
    switch (dtype) {
    case DSV3_TENSOR_F32: return "f32";
    case DSV3_TENSOR_BF16: return "bf16";
    }
    return "unknown";
}

Dsv3Err dsv3_cpu_check_f32(const char *op, Dsv3TensorDtype dtype) {
    DSV3_CHECK(dtype == DSV3_TENSOR_F32, DSV3_ERR_USAGE,
               "%s: dtype %s (%d) is not supported by the CPU backends, which compute in f32 "
               "only (pass DSV3_TENSOR_F32)",
               op, dtype_name(dtype), (int)dtype);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_workspace(const Dsv3KernelContext *ctx, const char *op, size_t needed) {
    if (needed == 0) return DSV3_OK;
    const size_t given = ctx->workspace != NULL ? ctx->workspace_bytes : 0;
    DSV3_CHECK(given >= needed, DSV3_ERR_USAGE,
               "%s: needs %zu bytes of workspace, the context has %zu (size ctx->workspace with "
               "dsv3_workspace_bytes)",
               op, needed, given);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_workspace_query(int op, const Dsv3OpShape *shape, const size_t *bytes) {
    DSV3_CHECK(op >= 0 && op < DSV3_OP_COUNT, DSV3_ERR_USAGE,
               "workspace_bytes: op = %d is not an op (expected a DSV3_OP_*, 0 to %d)", op,
               DSV3_OP_COUNT - 1);
    DSV3_CHECK(shape != NULL && bytes != NULL, DSV3_ERR_USAGE,
               "workspace_bytes: shape and bytes must not be NULL");
    return DSV3_OK;
}
