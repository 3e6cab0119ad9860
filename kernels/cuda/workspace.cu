// workspace: the workspace query of the CUDA backend — the device bytes each op takes from
// ctx->workspace for a shape. The layouts live with their ops (the workspace functions of
// cuda_kernels.cuh); ops without scratch need 0 bytes.
#include <stdint.h>

#include "kernels/cuda/cuda_kernels.cuh"

extern "C" Dsv3Err dsv3_cuda_workspace_bytes(const Dsv3KernelContext *ctx, int op,
                                             const Dsv3OpShape *shape, size_t *bytes) {
    (void)ctx;
    DSV3_CHECK(op >= 0 && op < DSV3_OP_COUNT, DSV3_ERR_USAGE,
               "workspace_bytes: op = %d is not an op (expected a DSV3_OP_*, 0 to %d)", op,
               DSV3_OP_COUNT - 1);
    DSV3_CHECK(shape != NULL && bytes != NULL, DSV3_ERR_USAGE,
               "workspace_bytes: shape and bytes must not be NULL");
    size_t need = 0;
    switch ((Dsv3Op)op) {
    case DSV3_OP_ATTENTION_FORWARD:
    case DSV3_OP_ATTENTION_BACKWARD: need = dsv3_cuda_attention_workspace((Dsv3Op)op, shape); break;
    case DSV3_OP_MOE_PLAN:
    case DSV3_OP_MOE_GATHER:
    case DSV3_OP_MOE_GATHER_BACKWARD:
    case DSV3_OP_MOE_COMBINE_FORWARD:
    case DSV3_OP_MOE_COMBINE_BACKWARD: need = dsv3_cuda_moe_workspace((Dsv3Op)op, shape); break;
    case DSV3_OP_EXPERTS_FORWARD:
    case DSV3_OP_EXPERTS_BACKWARD: need = dsv3_cuda_experts_workspace((Dsv3Op)op, shape); break;
    case DSV3_OP_CROSS_ENTROPY:
    case DSV3_OP_CROSS_ENTROPY_LOGITS:
        need = dsv3_cuda_cross_entropy_workspace((Dsv3Op)op, shape);
        break;
    case DSV3_OP_VOCAB_LOGITS:
    case DSV3_OP_VOCAB_LOGITS_SUMS:
    case DSV3_OP_VOCAB_LOGITS_BACKWARD:
        need = dsv3_cuda_vocab_parallel_workspace((Dsv3Op)op, shape);
        break;
    default: need = 0; break;
    }
    DSV3_CHECK(need != SIZE_MAX, DSV3_ERR_USAGE,
               "workspace_bytes: the workspace of %s for this shape does not fit in memory",
               dsv3_op_name((Dsv3Op)op));
    *bytes = need;
    return DSV3_OK;
}
