// plan: per-rank shares of a job, from the model arguments and the resolved layout.
#include "plan.h"

#include <inttypes.h>
#include <stdio.h>

#include "common/core/format.h"

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

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
    if (out->role == DSV3_ROLE_EXPERT) {
        out->expert_count = args->num_experts / dims->ep;
        out->first_expert = out->ep_rank * out->expert_count;
        for (int64_t l = out->first_layer; l < out->first_layer + out->layer_count; l++)
            out->params += dsv3_model_layer_params(args, l).routed / dims->ep;
        return DSV3_OK;
    }
    // Stage rank: every flat buffer is split over the FSDP × TP group, padded to a multiple.
    int64_t shards = dims->dp_shard * dims->cp * dims->tp;
    out->has_embedding = out->pp_stage == 0;
    out->has_head = out->pp_stage == dims->pp - 1;
    for (int64_t l = out->first_layer; l < out->first_layer + out->layer_count; l++) {
        Dsv3LayerParams p = dsv3_model_layer_params(args, l);
        out->params += ceil_div(p.dense, shards);
        if (n_expert == 0 && p.routed) out->params += ceil_div(p.routed, shards);
    }
    if (out->has_embedding) out->params += ceil_div(dsv3_model_embedding_params(args), shards);
    if (out->has_head) out->params += ceil_div(dsv3_model_head_params(args), shards);
    return DSV3_OK;
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
    snprintf(out, capacity, "rank %" PRId64 ": %s; %s params: %s params, %s grads, %s optimizer",
             s->job_rank, where, count, params, grads, optim);
}
