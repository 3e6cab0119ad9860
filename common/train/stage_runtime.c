// stage_runtime: the model of one stage rank, from the launch.
#include "stage_runtime.h"

#include <stdlib.h>
#include <string.h>

#include "common/comm/layout.h"

// Tokens per chunk of the fused output head + loss: bounds the logits held at once to
// LOSS_CHUNK × vocab floats (129,280 × 1024 × 4 B = 0.5 GiB at the 671B vocabulary).
enum { LOSS_CHUNK = 1024 };

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

Dsv3Err dsv3_stage_model_create(Dsv3Model **out, const Dsv3Launch *launch, int32_t eos_id,
                                Dsv3Collectives *collectives) {
    const Dsv3Topology *t = &launch->topology;
    const Dsv3ModelArgs *args = &launch->model;
    Dsv3StageRange range = {.dense = 1, .routed = t->n_expert == 0};
    DSV3_CALL(dsv3_layout_stage_layers(args->n_layers, t->dims.pp, t->coord.pp, &range.first_layer,
                                       &range.n_layers));
    range.first = t->coord.pp == 0;
    range.last = t->coord.pp == t->dims.pp - 1;
    Dsv3ModelOptions opt;
    DSV3_CALL(dsv3_stage_model_options(&launch->config, eos_id, &opt));
    return dsv3_model_create_local(out, args, &opt, &range, (uint64_t)launch->config.debug.seed,
                                   collectives);
}
