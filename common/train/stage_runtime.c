// stage_runtime: kernel context, parameter store, experts and model of one stage rank.
#include "stage_runtime.h"

#include <stdlib.h>
#include <string.h>

#include "common/comm/layout.h"

// Tokens per chunk of the fused output head + loss: bounds the logits held at once to
// LOSS_CHUNK × vocab floats (129,280 × 1024 × 4 B = 0.5 GiB at the 671B vocabulary).
enum { LOSS_CHUNK = 1024 };

// The CPU backend has no device.
enum { NO_DEVICE = -1 };

Dsv3Err dsv3_stage_model_options(const Dsv3Config *cfg, int32_t eos_id, Dsv3ModelOptions *out) {
    const char *mode = cfg->activation_checkpoint.mode;
    const char *option = cfg->activation_checkpoint.selective_ac_option;
    *out = (Dsv3ModelOptions){.batch = cfg->training.local_batch_size,
                              .seq_len = cfg->training.seq_len,
                              .eos_id = eos_id,
                              .ac_mode = DSV3_AC_NONE,
                              .loss_chunk = LOSS_CHUNK,
                              .slots = 1};
    if (strcmp(mode, "full") == 0)
        out->ac_mode = DSV3_AC_FULL;
    else if (strcmp(mode, "selective") == 0 && strcmp(option, "op") == 0)
        out->ac_mode = DSV3_AC_OP;
    else if (strcmp(mode, "selective") == 0)
        out->ac_every = strtoll(option, NULL, 10);
    return DSV3_OK;
}

Dsv3Err dsv3_stage_runtime_create(Dsv3StageRuntime *rt, const Dsv3Launch *launch, int32_t eos_id,
                                  Dsv3Collectives *collectives) {
    const Dsv3Topology *t = &launch->topology;
    const Dsv3ModelArgs *args = &launch->model;
    Dsv3StageRange range = {.dense = 1, .routed = t->n_expert == 0};
    DSV3_CALL(dsv3_layout_stage_layers(args->n_layers, t->dims.pp, t->coord.pp, &range.first_layer,
                                       &range.n_layers));
    range.first = t->coord.pp == 0;
    range.last = t->coord.pp == t->dims.pp - 1;
    DSV3_CALL(dsv3_kernel_context_create(&rt->kernels, DSV3_BACKEND_CPU, NO_DEVICE));
    // The local store holds whole groups: tensor parallelism and FSDP sharding refuse to start
    // (launch.h), so this is what the layout's plan says (comm/plan.h).
    DSV3_CALL(dsv3_param_store_local_create(&rt->store, &rt->kernels, args, &range,
                                            (uint64_t)launch->config.debug.seed));
    dsv3_local_experts_init(&rt->experts, rt->store, &rt->kernels);
    Dsv3ModelOptions opt;
    DSV3_CALL(dsv3_stage_model_options(&launch->config, eos_id, &opt));
    size_t bytes = 0;
    DSV3_CALL(dsv3_model_workspace_bytes(&rt->kernels, args, &opt, rt->store, &bytes));
    if (bytes > 0)
        DSV3_CALL(dsv3_memory_alloc(&rt->kernels, &rt->workspace, bytes, "kernel workspace"));
    rt->kernels.workspace = rt->workspace;
    rt->kernels.workspace_bytes = bytes;
    Dsv3ModelServices services = {.kernels = &rt->kernels,
                                  .params = rt->store,
                                  .collectives = collectives,
                                  .experts = range.routed ? &rt->experts.base : NULL};
    return dsv3_model_create(&rt->model, args, &opt, &services);
}

void dsv3_stage_runtime_destroy(Dsv3StageRuntime *rt) {
    dsv3_model_destroy(rt->model);
    dsv3_param_store_destroy(rt->store);
    if (rt->workspace) dsv3_memory_free(&rt->kernels, rt->workspace);
    dsv3_kernel_context_destroy(&rt->kernels);
    memset(rt, 0, sizeof *rt);
}
