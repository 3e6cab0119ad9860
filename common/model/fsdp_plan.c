// fsdp_plan: reshard policies and the FSDP store's buffer counts.
#include "fsdp_plan.h"

#include <string.h>

static const char *const POLICY_NAMES[] = {"default", "always", "never"};

Dsv3Err dsv3_reshard_policy_parse(const char *name, Dsv3ReshardPolicy *out) {
    for (int p = 0; p < (int)(sizeof POLICY_NAMES / sizeof *POLICY_NAMES); p++)
        if (strcmp(name, POLICY_NAMES[p]) == 0) {
            *out = (Dsv3ReshardPolicy)p;
            return DSV3_OK;
        }
    DSV3_RAISE(DSV3_ERR_CONFIG,
               "parallelism.fsdp_reshard_after_forward = \"%s\": expected default, always or never",
               name);
}

int dsv3_reshard_after_forward(Dsv3ReshardPolicy policy, Dsv3GroupKind kind, int pipelined) {
    switch (policy) {
    case DSV3_RESHARD_ALWAYS: return 1;
    case DSV3_RESHARD_NEVER: return 0;
    case DSV3_RESHARD_DEFAULT: return !pipelined && kind != DSV3_GROUP_HEAD;
    }
    return 1;
}

void dsv3_fsdp_buffers(Dsv3ReshardPolicy policy, int pipelined, int split_backward,
                       const Dsv3ParamGroup *groups, int n, Dsv3FsdpBuffers *out) {
    *out = (Dsv3FsdpBuffers){0};
    int kept = 0, layers = 0; // kept after forward (the last group aside); layer groups
    for (int g = 0; g < n; g++) {
        if (groups[g].numel > out->buffer_numel) out->buffer_numel = groups[g].numel;
        kept += g + 1 < n && !dsv3_reshard_after_forward(policy, groups[g].kind, pipelined);
        layers += groups[g].kind == DSV3_GROUP_LAYER;
    }
    int working = DSV3_FSDP_WORKING_BUFFERS + kept, all_kept = n + DSV3_FSDP_GRAD_BUFFERS;
    out->buffers = (working < all_kept ? working : all_kept) + (split_backward ? layers : 0);
}

int64_t dsv3_fsdp_buffer_bytes(const Dsv3FsdpBuffers *b) {
    return (int64_t)b->buffers * b->buffer_numel * (int64_t)sizeof(float);
}
