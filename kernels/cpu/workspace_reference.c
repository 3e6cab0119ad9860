// workspace_reference.c: the workspace query of the reference backend: the bytes each
// reference op takes from ctx->workspace for a shape (single-threaded: no per-thread scratch).
// The layouts live with their ops (cpu.h); ops without scratch need 0 bytes.
#include <stdint.h>

#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_reference_workspace_bytes(const Dsv3KernelContext *ctx, int op,
                                           const Dsv3OpShape *shape, size_t *bytes) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_workspace_query(op, shape, bytes));
    size_t need = 0;
    switch ((Dsv3Op)op) {
    case DSV3_OP_ATTENTION_FORWARD:
        need = dsv3_cpu_reference_attention_forward_workspace(shape);
        break;
    case DSV3_OP_ATTENTION_BACKWARD:
        need = dsv3_cpu_reference_attention_backward_workspace(shape);
        break;
    case DSV3_OP_CROSS_ENTROPY: need = dsv3_cpu_reference_cross_entropy_workspace(shape); break;
    case DSV3_OP_EXPERTS_FORWARD: need = dsv3_cpu_reference_experts_forward_workspace(shape); break;
    case DSV3_OP_EXPERTS_BACKWARD:
        need = dsv3_cpu_reference_experts_backward_workspace(shape);
        break;
    case DSV3_OP_MOE_COMBINE_FORWARD:
    case DSV3_OP_MOE_COMBINE_BACKWARD:
        need = dsv3_cpu_reference_moe_combine_workspace(shape);
        break;
    case DSV3_OP_ROUTER_FORWARD: need = dsv3_cpu_reference_router_forward_workspace(shape); break;
    case DSV3_OP_ROUTER_BACKWARD: need = dsv3_cpu_reference_router_backward_workspace(shape); break;
    default: need = 0; break;
    }
    DSV3_CHECK(need != SIZE_MAX, DSV3_ERR_USAGE,
               "workspace_bytes: the workspace of %s for this shape does not fit in memory",
               dsv3_op_name((Dsv3Op)op));
    *bytes = need;
    return DSV3_OK;
}
