// plan: per-rank shares of a job, from the model arguments and the resolved layout.
#include "plan.h"

#include <inttypes.h>
#include <stdio.h>

#include "common/core/alloc.h"
#include "common/core/format.h"
#include "common/model/model_config.h"

Dsv3Err dsv3_plan_options_from_config(const Dsv3Config *cfg, Dsv3PlanOptions *out) {
    // The EOS id changes no buffer size (block-causal masks keep document ids either way).
    DSV3_CALL(dsv3_model_options_from_config(cfg, -1, &out->model));
    return dsv3_reshard_policy_parse(cfg->parallelism.fsdp_reshard_after_forward, &out->reshard);
}

Dsv3ShardSpec dsv3_plan_stage_spec(const Dsv3ParallelDims *dims, const Dsv3StageCoord *coord) {
    // The FSDP group is [dp_shard][cp] in mesh order (comm/topology.h).
    return (Dsv3ShardSpec){.tp = dims->tp,
                           .tp_rank = coord->tp,
                           .fsdp = dims->dp_shard * dims->cp,
                           .fsdp_rank = coord->dp_shard * dims->cp + coord->cp,
                           .ep = 1};
}

// The flat shards of `range` laid out for `spec` and, for stage ranks, the buffers, activations
// and workspace they come with.
static Dsv3Err plan_groups(const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                           const Dsv3ShardSpec *spec, const Dsv3PlanOptions *opt,
                           const Dsv3ParallelDims *dims, Dsv3RankShare *out) {
    Dsv3ParamStore store = {.args = *args, .range = *range, .fsdp_size = spec->fsdp};
    store.n_groups = dsv3_param_stage_group_count(args, range);
    DSV3_CALL(dsv3_calloc((void **)&store.groups, (size_t)(store.n_groups ? store.n_groups : 1),
                          sizeof *store.groups, "plan groups"));
    Dsv3KernelContext kernels = {0};
    Dsv3Err err = dsv3_param_stage_groups(args, range, spec, store.groups);
    for (int g = 0; g < store.n_groups && err == DSV3_OK; g++)
        out->params += store.groups[g].shard_numel;
    if (err == DSV3_OK && out->role == DSV3_ROLE_STAGE) {
        if (spec->fsdp > 1) {
            Dsv3FsdpBuffers buffers;
            dsv3_fsdp_buffers(opt->reshard, dims->pp > 1, store.groups, store.n_groups, &buffers);
            out->gather_bytes = dsv3_fsdp_buffer_bytes(&buffers);
        }
        err = dsv3_model_plan_activation_bytes(args, &opt->model, range, &out->activation_bytes);
        if (err == DSV3_OK) err = dsv3_kernel_context_create(&kernels, DSV3_BACKEND_CPU, -1);
        size_t workspace = 0;
        if (err == DSV3_OK)
            err = dsv3_model_workspace_bytes(&kernels, args, &opt->model, &store, &workspace);
        out->workspace_bytes = (int64_t)workspace;
        dsv3_kernel_context_destroy(&kernels);
    }
    dsv3_free(store.groups);
    return err;
}

Dsv3Err dsv3_plan_rank(const Dsv3ModelArgs *args, const Dsv3ParallelDims *dims,
                       const Dsv3PlanOptions *opt, int64_t job_rank, Dsv3RankShare *out) {
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
        out->fsdp = dims->dp_shard * dims->cp;
        range.dense = 1;
        range.routed = n_expert == 0;
        spec = dsv3_plan_stage_spec(dims, &out->coord);
    }
    return plan_groups(args, &range, &spec, opt, dims, out);
}

int64_t dsv3_plan_total_bytes(const Dsv3RankShare *s) {
    int64_t state = DSV3_PLAN_PARAM_BYTES + DSV3_PLAN_GRAD_BYTES + DSV3_PLAN_OPTIMIZER_BYTES;
    return s->params * state + s->gather_bytes + s->activation_bytes + s->workspace_bytes;
}

void dsv3_plan_describe(const Dsv3RankShare *s, char *out, size_t capacity) {
    if (s->role == DSV3_ROLE_COORDINATOR) {
        snprintf(out, capacity,
                 "rank %" PRId64 ": coordinator (data, schedule, metrics; no model memory)",
                 s->job_rank);
        return;
    }
    char count[DSV3_FORMAT_CAPACITY], params[DSV3_FORMAT_CAPACITY], grads[DSV3_FORMAT_CAPACITY],
        optim[DSV3_FORMAT_CAPACITY], where[160], more[256] = "";
    dsv3_format_count(s->params, count);
    dsv3_format_bytes((double)s->params * DSV3_PLAN_PARAM_BYTES, params);
    dsv3_format_bytes((double)s->params * DSV3_PLAN_GRAD_BYTES, grads);
    dsv3_format_bytes((double)s->params * DSV3_PLAN_OPTIMIZER_BYTES, optim);
    if (s->role == DSV3_ROLE_STAGE) {
        snprintf(where, sizeof where,
                 "stage pp %" PRId64 " dp_replicate %" PRId64 " dp_shard %" PRId64 " cp %" PRId64
                 " tp %" PRId64 "; layers %" PRId64 "-%" PRId64 "%s%s",
                 s->coord.pp, s->coord.dp_replicate, s->coord.dp_shard, s->coord.cp, s->coord.tp,
                 s->first_layer, s->first_layer + s->layer_count - 1,
                 s->has_embedding ? " + embedding" : "", s->has_head ? " + norm, output" : "");
        char gather[DSV3_FORMAT_CAPACITY], acts[DSV3_FORMAT_CAPACITY],
            workspace[DSV3_FORMAT_CAPACITY], total[DSV3_FORMAT_CAPACITY];
        snprintf(more, sizeof more,
                 ", %s gather buffers, %s activations, %s workspace = %s (sharded over %" PRId64
                 " dp_shard × cp ranks)",
                 dsv3_format_bytes((double)s->gather_bytes, gather),
                 dsv3_format_bytes((double)s->activation_bytes, acts),
                 dsv3_format_bytes((double)s->workspace_bytes, workspace),
                 dsv3_format_bytes((double)dsv3_plan_total_bytes(s), total), s->fsdp);
    } else {
        snprintf(where, sizeof where,
                 "expert pp %" PRId64 " ep %" PRId64 "; routed experts %" PRId64 "-%" PRId64
                 " of the MoE layers among %" PRId64 "-%" PRId64,
                 s->pp_stage, s->ep_rank, s->first_expert, s->first_expert + s->expert_count - 1,
                 s->first_layer, s->first_layer + s->layer_count - 1);
    }
    snprintf(out, capacity, "rank %" PRId64 ": %s; %s params: %s params, %s grads, %s optimizer%s",
             s->job_rank, where, count, params, grads, optim, more);
}
