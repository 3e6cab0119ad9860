// workspace.c: the workspace query of the fast CPU backend: the bytes each op takes from
// ctx->workspace for a shape, with the OpenMP thread count of the calling thread (the ops
// that keep per-thread scratch use as many threads as omp_get_max_threads() says when they
// run). The layouts live with their ops (cpu.h); ops without scratch need 0 bytes.
#include <omp.h>
#include <stdint.h>

#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_workspace_bytes(const Dsv3KernelContext *ctx, int op, const Dsv3OpShape *shape,
                                 size_t *bytes) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_workspace_query(op, shape, bytes));
    const int threads = omp_get_max_threads();
    size_t need = 0;
    switch ((Dsv3Op)op) {
    case DSV3_OP_ATTENTION_FORWARD:
        need = dsv3_cpu_attention_forward_workspace(shape, threads);
        break;
    case DSV3_OP_ATTENTION_BACKWARD:
        need = dsv3_cpu_attention_backward_workspace(shape, threads);
        break;
    case DSV3_OP_CROSS_ENTROPY: need = dsv3_cpu_cross_entropy_workspace(shape, threads); break;
    case DSV3_OP_CROSS_ENTROPY_LOGITS:
        need = dsv3_cpu_cross_entropy_logits_workspace(shape, threads);
        break;
    case DSV3_OP_EXPERTS_FORWARD: need = dsv3_cpu_experts_forward_workspace(shape, threads); break;
    case DSV3_OP_EXPERTS_BACKWARD:
        need = dsv3_cpu_experts_backward_workspace(shape, threads);
        break;
    case DSV3_OP_MOE_PLAN: need = dsv3_cpu_moe_plan_workspace(shape, threads); break;
    case DSV3_OP_MOE_GATHER_BACKWARD:
    case DSV3_OP_MOE_COMBINE_FORWARD:
    case DSV3_OP_MOE_COMBINE_BACKWARD: need = dsv3_cpu_moe_rows_of_workspace(shape, threads); break;
    case DSV3_OP_RMSNORM_BACKWARD:
        need = dsv3_cpu_rmsnorm_backward_workspace(shape, threads);
        break;
    case DSV3_OP_ROUTER_FORWARD: need = dsv3_cpu_router_forward_workspace(shape, threads); break;
    default: need = 0; break;
    }
    DSV3_CHECK(need != SIZE_MAX, DSV3_ERR_USAGE,
               "workspace_bytes: the workspace of %s for this shape does not fit in memory",
               dsv3_op_name((Dsv3Op)op));
    *bytes = need;
    return DSV3_OK;
}
