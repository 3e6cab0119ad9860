// fsdp_plan: the arithmetic of the FSDP store (comm/param_store_fsdp.h), without MPI — the
// reshard policy and the buffers the store allocates — so that the dry-run plan
// (comm/plan.h), the store and the unit tests agree on one set of numbers.
//
// Reshard policy (parallelism.fsdp_reshard_after_forward), torchtitan's meaning
// (models/deepseek_v3/infra/parallelize.py, apply_fsdp): after a group's forward its gathered
// copy is freed ("resharded") or kept until its backward.
//   default  every group is resharded except the last stage's final norm and output head,
//            which backward needs right away; with pipeline parallelism nothing is resharded
//            (each micro-batch would gather again);
//   always   every group is resharded;
//   never    no group is: forward's copies serve backward (memory for communication).
// After its backward a group is always resharded.
//
// Buffers. A gathered group and a group's full gradient each live in a buffer of one pool,
// every buffer sized for the largest group of the stage. In backward a layer holds its values
// and gradients, its routed experts (acquired inside the layer) theirs, and the next group's
// prefetch one more: DSV3_FSDP_WORKING_BUFFERS. A group a policy keeps after forward adds one,
// unless it is the last group (its backward comes first, before the working set fills);
// with every group kept, the kept values and two gradients suffice. A gradient buffer stays
// busy while its reduce-scatter runs (in place); a group that finds no free buffer completes
// the oldest reduce-scatter first. A split backward (a zero-bubble pipeline's I and W) keeps a
// layer group's gradients from its I to its W, each layer group holding one more buffer then.
#ifndef DSV3_MODEL_FSDP_PLAN_H
#define DSV3_MODEL_FSDP_PLAN_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/model/params.h"

typedef enum { DSV3_RESHARD_DEFAULT, DSV3_RESHARD_ALWAYS, DSV3_RESHARD_NEVER } Dsv3ReshardPolicy;

enum {
    DSV3_FSDP_WORKING_BUFFERS = 5, // values and gradients of a layer and its experts, a prefetch
    DSV3_FSDP_GRAD_BUFFERS = 2,    // gradients of a layer and its experts
};

// "default", "always", "never" → the policy; anything else is DSV3_ERR_CONFIG naming the key.
Dsv3Err dsv3_reshard_policy_parse(const char *name, Dsv3ReshardPolicy *out);

// Whether a group of `kind` is freed after its forward (`pipelined`: pp > 1).
int dsv3_reshard_after_forward(Dsv3ReshardPolicy policy, Dsv3GroupKind kind, int pipelined);

typedef struct {
    int buffers;          // full-size buffers (buffer_numel elements each)
    int64_t buffer_numel; // the largest group's full numel
} Dsv3FsdpBuffers;

// The buffers of the FSDP store over `groups` (n of them, laid out for the FSDP spec);
// `split_backward`: the model splits its backward (see above).
void dsv3_fsdp_buffers(Dsv3ReshardPolicy policy, int pipelined, int split_backward,
                       const Dsv3ParamGroup *groups, int n, Dsv3FsdpBuffers *out);

// Bytes of those buffers (fp32).
int64_t dsv3_fsdp_buffer_bytes(const Dsv3FsdpBuffers *b);

#endif
