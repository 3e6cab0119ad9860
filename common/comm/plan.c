// plan: per-rank shares of a job, from the model arguments and the resolved layout.
#include "plan.h"

#include <inttypes.h>
#include <stdio.h>

#include "common/core/alloc.h"
#include "common/core/format.h"

Dsv3ShardSpec dsv3_plan_stage_spec(const Dsv3ParallelDims *dims, const Dsv3StageCoord *coord) {
    // FSDP sharding over dp_shard × cp is not implemented: those ranks hold whole pieces, as
    // replicas, until a sharding parameter store lands.
    return (Dsv3ShardSpec){.tp = dims->tp, .tp_rank = coord->tp, .fsdp = 1, .ep = 1};
}

// Elements of the flat shards of `range` laid out for `spec`.
static Dsv3Err shard_elements(const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                              const Dsv3ShardSpec *spec, int64_t *out) {
    int n = dsv3_param_stage_group_count(args, range);
    Dsv3ParamGroup *groups = NULL;
    DSV3_CALL(dsv3_calloc((void **)&groups, (size_t)(n ? n : 1), sizeof *groups, "plan groups"));
    Dsv3Err err = dsv3_param_stage_groups(args, range, spec, groups);
    *out = 0;
    for (int g = 0; g < n && err == DSV3_OK; g++)
        *out += groups[g].shard_numel;
    dsv3_free(groups);
    return err;
}

Dsv3Err dsv3_plan_rank(const Dsv3ModelArgs *args, const Dsv3ParallelDims *dims, int64_t job_rank,
                       Dsv3RankShare *out) {
    int64_t n_stage = dsv3_layout_stage_count(dims);
    int64_t n_expert = dsv3_layout_expert_count(dims);
    DSV3_CHECK(job_rank >= 0 && job_rank < 1 + n_stage + n_expert, DSV3_ERR_USAGE,
               "job rank %" PRId64 " is outside a job of %" PRId64 " ranks", job_rank,
               1 + n_stage + n_expert);
    *out = (Dsv3RankShare){
        .job_rank = job_rank, .pp_stage = -1, .ep_rank = -1, .coord = {-1, -1, -1, -1, -1}};
    if (job_rank == 0) {
        out->role = DSV3_ROLE_COORDINATOR;
        return DSV3_OK;
    }
    if (job_rank <= n_stage) {
        out->role = DSV3_ROLE_STAGE;
        DSV3_CALL(dsv3_layout_stage_coord(dims, job_rank - 1, &out->coord));
        out->pp_stage = out->coord.pp;
    } else {
        out->role = DSV3_ROLE_EXPERT;
        DSV3_CALL(
            dsv3_layout_expert_coord(dims, job_rank - 1 - n_stage, &out->pp_stage, &out->ep_rank));
    }
    DSV3_CALL(dsv3_layout_stage_layers(args->n_layers, dims->pp, out->pp_stage, &out->first_layer,
                                       &out->layer_count));
    Dsv3StageRange range = {.first_layer = out->first_layer,
                            .n_layers = out->layer_count,
                            .first = out->pp_stage == 0,
                            .last = out->pp_stage == dims->pp - 1};
    Dsv3ShardSpec spec;
    if (out->role == DSV3_ROLE_EXPERT) {
        out->expert_count = args->num_experts / dims->ep;
        out->first_expert = out->ep_rank * out->expert_count;
        range.routed = 1;
        spec = (Dsv3ShardSpec){.tp = 1, .fsdp = 1, .ep = dims->ep, .ep_rank = out->ep_rank};
    } else {
        out->has_embedding = range.first;
        out->has_head = range.last;
        out->fsdp_replicas = dims->dp_shard * dims->cp;
        range.dense = 1;
        range.routed = n_expert == 0;
        spec = dsv3_plan_stage_spec(dims, &out->coord);
    }
    return shard_elements(args, &range, &spec, &out->params);
}

void dsv3_plan_describe(const Dsv3RankShare *s, char *out, size_t capacity) {
    if (s->role == DSV3_ROLE_COORDINATOR) {
        snprintf(out, capacity,
                 "rank %" PRId64 ": coordinator (data, schedule, metrics; no model memory)",
                 s->job_rank);
        return;
    }
    char count[DSV3_FORMAT_CAPACITY], params[DSV3_FORMAT_CAPACITY], grads[DSV3_FORMAT_CAPACITY],
        optim[DSV3_FORMAT_CAPACITY], where[160];
    dsv3_format_count(s->params, count);
    dsv3_format_bytes((double)s->params * DSV3_PLAN_PARAM_BYTES, params);
    dsv3_format_bytes((double)s->params * DSV3_PLAN_GRAD_BYTES, grads);
    dsv3_format_bytes((double)s->params * DSV3_PLAN_OPTIMIZER_BYTES, optim);
    if (s->role == DSV3_ROLE_STAGE)
        snprintf(where, sizeof where,
                 "stage pp %" PRId64 " dp_replicate %" PRId64 " dp_shard %" PRId64 " cp %" PRId64
                 " tp %" PRId64 "; layers %" PRId64 "-%" PRId64 "%s%s",
                 s->coord.pp, s->coord.dp_replicate, s->coord.dp_shard, s->coord.cp, s->coord.tp,
                 s->first_layer, s->first_layer + s->layer_count - 1,
                 s->has_embedding ? " + embedding" : "", s->has_head ? " + norm, output" : "");
    else
        snprintf(where, sizeof where,
                 "expert pp %" PRId64 " ep %" PRId64 "; routed experts %" PRId64 "-%" PRId64
                 " of the MoE layers among %" PRId64 "-%" PRId64,
                 s->pp_stage, s->ep_rank, s->first_expert, s->first_expert + s->expert_count - 1,
                 s->first_layer, s->first_layer + s->layer_count - 1);
    snprintf(out, capacity, "rank %" PRId64 ": %s; %s params: %s params, %s grads, %s optimizer%s",
             s->job_rank, where, count, params, grads, optim,
             s->fsdp_replicas > 1 ? "; the same as the other dp_shard × cp ranks (FSDP sharding "
                                    "is not implemented yet)"
                                  : "");
}
