// plan: per-rank shares of a job, from the model arguments and the resolved layout.
#include "plan.h"

#include <inttypes.h>
#include <stdio.h>

#include "common/core/alloc.h"
#include "common/comm/pipe_exchange.h"
#include "common/core/format.h"
#include "common/model/model_config.h"

static Dsv3Err pipeline_from_config(const Dsv3Config *cfg, Dsv3PlanPipeline *out) {
    const char *schedule = cfg->parallelism.pipeline_parallel_schedule;
    int64_t pp = cfg->parallelism.pipeline_parallel_degree, B = cfg->training.local_batch_size;
    int64_t mb = cfg->parallelism.pipeline_parallel_microbatch_size;
    int64_t per_stage = cfg->parallelism.pipeline_parallel_layers_per_stage;
    DSV3_CALL(dsv3_pipe_kind_parse(schedule, &out->kind));
    out->split =
        (Dsv3PipeSplit){.n_stages = 1,
                        .input_weight = cfg->parallelism.pipeline_parallel_first_stage_less_layers,
                        .output_weight = cfg->parallelism.pipeline_parallel_last_stage_less_layers};
    if (pp == 1) {
        // Without a pipeline these keys would change nothing.
        DSV3_CHECK(mb == 1 && per_stage == -1 && out->split.input_weight == 1 &&
                       out->split.output_weight == 1 && out->kind == DSV3_PIPE_1F1B,
                   DSV3_ERR_CONFIG,
                   "parallelism.pipeline_parallel_schedule \"%s\", "
                   "pipeline_parallel_microbatch_size %" PRId64
                   ", pipeline_parallel_layers_per_stage %" PRId64
                   ", pipeline_parallel_first_stage_less_layers %" PRId64
                   " and pipeline_parallel_last_stage_less_layers %" PRId64
                   " apply only to a pipeline, but pipeline_parallel_degree is 1: leave them at "
                   "\"1F1B\", 1, -1, 1 and 1",
                   schedule, mb, per_stage, out->split.input_weight, out->split.output_weight);
        *out = (Dsv3PlanPipeline){.kind = out->kind,
                                  .stages_per_rank = 1,
                                  .n_micro = 1,
                                  .micro_batch = B,
                                  .split = out->split};
        return DSV3_OK;
    }
    DSV3_CHECK(B % mb == 0, DSV3_ERR_CONFIG,
               "training.local_batch_size %" PRId64
               " is not a multiple of parallelism.pipeline_parallel_microbatch_size %" PRId64
               ": every pipeline micro-batch has the same number of sequences",
               B, mb);
    // A v runs exactly two stages per rank, a loop at least two.
    int looped = dsv3_pipe_kind_is_looped(out->kind), v = dsv3_pipe_kind_is_v_shaped(out->kind);
    int64_t stages = looped || v ? 2 * pp : pp;
    if (per_stage != -1) {
        DSV3_CHECK(per_stage >= 1, DSV3_ERR_CONFIG,
                   "parallelism.pipeline_parallel_layers_per_stage is %" PRId64
                   ", but it must be at least 1 (or -1: chosen from the schedule)",
                   per_stage);
        int64_t effective =
            cfg->model.n_layers + out->split.input_weight + out->split.output_weight;
        stages = (effective + per_stage - 1) / per_stage;
        DSV3_CHECK(looped ? stages % pp == 0 && stages >= 2 * pp : stages == (v ? 2 * pp : pp),
                   DSV3_ERR_CONFIG,
                   "model.n_layers %" PRId64 " with pipeline_parallel_layers_per_stage %" PRId64
                   " (and the embedding and head counted as %" PRId64 " and %" PRId64
                   " layers) makes %" PRId64 " pipeline stages, but pipeline_parallel_schedule "
                   "\"%s\" runs %s on each of the pipeline_parallel_degree %" PRId64 " ranks",
                   cfg->model.n_layers, per_stage, out->split.input_weight,
                   out->split.output_weight, stages, schedule,
                   looped ? "the same number of stages, at least 2,"
                   : v    ? "two stages"
                          : "one stage",
                   pp);
    }
    DSV3_CHECK(stages / pp <= DSV3_PLAN_MAX_CHUNKS, DSV3_ERR_CONFIG,
               "parallelism.pipeline_parallel_layers_per_stage %" PRId64 " makes %" PRId64
               " pipeline stages per rank, more than the %d a rank holds",
               per_stage, stages / pp, (int)DSV3_PLAN_MAX_CHUNKS);
    out->stages_per_rank = stages / pp;
    out->split.n_stages = stages;
    out->n_micro = B / mb;
    out->micro_batch = mb;
    return DSV3_OK;
}

Dsv3Err dsv3_plan_options_from_config(const Dsv3Config *cfg, Dsv3PlanOptions *out) {
    // The EOS id changes no buffer size (block-causal masks keep document ids either way).
    DSV3_CALL(dsv3_model_options_from_config(cfg, -1, &out->model));
    DSV3_CALL(pipeline_from_config(cfg, &out->pipe));
    out->pipe.overlap_pairs = cfg->parallelism.expert_parallel_degree > 1;
    out->model.batch = out->pipe.micro_batch;
    out->model.split_backward = dsv3_pipe_kind_splits_backward(out->pipe.kind);
    return dsv3_reshard_policy_parse(cfg->parallelism.fsdp_reshard_after_forward, &out->reshard);
}

Dsv3Err dsv3_plan_stage_range(const Dsv3ModelArgs *args, const Dsv3PlanOptions *opt, int64_t stage,
                              Dsv3StageRange *out) {
    *out = (Dsv3StageRange){.first = stage == 0, .last = stage == opt->pipe.split.n_stages - 1};
    return dsv3_layout_stage_layers(args->n_layers, &opt->pipe.split, stage, &out->first_layer,
                                    &out->n_layers);
}

Dsv3Err dsv3_plan_rank_chunks(const Dsv3PlanOptions *opt, int64_t pp, int64_t rank,
                              Dsv3PlanChunk chunks[DSV3_PLAN_MAX_CHUNKS]) {
    if (pp == 1) { // no pipeline: the whole model, one micro-batch at a time
        chunks[0] = (Dsv3PlanChunk){.stage = 0, .slots = 1};
        return DSV3_OK;
    }
    Dsv3PipeSchedule schedule;
    DSV3_CALL(dsv3_pipe_schedule_create(&schedule, opt->pipe.kind, pp, opt->pipe.n_micro,
                                        opt->pipe.stages_per_rank, opt->pipe.overlap_pairs));
    for (int64_t k = 0; k < opt->pipe.stages_per_rank; k++)
        chunks[k] = (Dsv3PlanChunk){.stage = dsv3_pipe_stage_of(&schedule, rank, k),
                                    .slots = dsv3_pipe_schedule_slots(&schedule, rank, k)};
    dsv3_pipe_schedule_destroy(&schedule);
    return DSV3_OK;
}

Dsv3PipeExchangeShape dsv3_plan_exchange_shape(const Dsv3ModelArgs *args,
                                               const Dsv3PlanOptions *opt, int64_t tp,
                                               const Dsv3PlanChunk *chunks, int64_t n) {
    int64_t tokens = opt->pipe.micro_batch * opt->model.seq_len;
    int64_t cp = opt->model.cp > 1 ? opt->model.cp : 1;
    // A cp rank's positions of the sequences, and of those a tp rank's rows (sequence
    // parallelism); the document ids are the whole sequences'.
    Dsv3PipeExchangeShape shape = {.n_rows = tokens / cp / tp,
                                   .dim = args->dim,
                                   .n_doc =
                                       args->attn_mask_type == DSV3_MASK_BLOCK_CAUSAL ? tokens : 0};
    for (int64_t k = 0; k < n; k++) {
        shape.slots += chunks[k].slots;
        shape.receives |= chunks[k].stage > 0;
        shape.sends |= chunks[k].stage < opt->pipe.split.n_stages - 1;
    }
    return shape;
}

Dsv3ShardSpec dsv3_plan_stage_spec(const Dsv3ParallelDims *dims, const Dsv3StageCoord *coord) {
    // The FSDP group is [dp_shard][cp] in mesh order (comm/topology.h).
    return (Dsv3ShardSpec){.tp = dims->tp,
                           .tp_rank = coord->tp,
                           .fsdp = dims->dp_shard * dims->cp,
                           .fsdp_rank = coord->dp_shard * dims->cp + coord->cp,
                           .ep = 1};
}

// Adds the flat shards of `range` laid out for `spec` and, for stage ranks, the buffers,
// activations and workspace they come with (each pipeline stage of a rank has its own).
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
            dsv3_fsdp_buffers(opt->reshard, dims->pp > 1, opt->model.split_backward, store.groups,
                              store.n_groups, &buffers);
            out->gather_bytes += dsv3_fsdp_buffer_bytes(&buffers);
        }
        int64_t activations = 0;
        err = dsv3_model_plan_activation_bytes(args, &opt->model, range, spec->tp, &activations);
        out->activation_bytes += activations;
        if (err == DSV3_OK) err = dsv3_kernel_context_create(&kernels, DSV3_BACKEND_CPU, -1);
        size_t workspace = 0;
        if (err == DSV3_OK)
            err = dsv3_model_workspace_bytes(&kernels, args, &opt->model, &store, &workspace);
        out->workspace_bytes += (int64_t)workspace;
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
    Dsv3PlanChunk chunks[DSV3_PLAN_MAX_CHUNKS];
    DSV3_CALL(dsv3_plan_rank_chunks(opt, dims->pp, out->pp_stage, chunks));
    out->n_chunks = opt->pipe.stages_per_rank;
    Dsv3StageRange range;
    if (out->role == DSV3_ROLE_EXPERT) { // the routed experts of the rank's stages
        out->expert_count = args->num_experts / dims->ep;
        out->first_expert = out->ep_rank * out->expert_count;
        Dsv3ShardSpec spec = {.tp = 1, .fsdp = 1, .ep = dims->ep, .ep_rank = out->ep_rank};
        for (int64_t k = 0; k < out->n_chunks; k++) {
            DSV3_CALL(dsv3_plan_stage_range(args, opt, chunks[k].stage, &range));
            range = (Dsv3StageRange){
                .first_layer = range.first_layer, .n_layers = range.n_layers, .routed = 1};
            out->chunks[k] = range;
            DSV3_CALL(plan_groups(args, &range, &spec, opt, dims, out));
        }
        out->first_layer = out->chunks[0].first_layer;
        out->layer_count = out->chunks[0].n_layers;
        return DSV3_OK;
    }
    out->fsdp = dims->dp_shard * dims->cp;
    Dsv3ShardSpec spec = dsv3_plan_stage_spec(dims, &out->coord);
    for (int64_t k = 0; k < out->n_chunks; k++) {
        DSV3_CALL(dsv3_plan_stage_range(args, opt, chunks[k].stage, &range));
        range.dense = 1;
        range.routed = n_expert == 0;
        out->chunks[k] = range;
        out->has_embedding |= range.first;
        out->has_head |= range.last;
        Dsv3PlanOptions mine = *opt;
        mine.model.slots = chunks[k].slots;
        DSV3_CALL(plan_groups(args, &range, &spec, &mine, dims, out));
    }
    out->first_layer = out->chunks[0].first_layer;
    out->layer_count = out->chunks[0].n_layers;
    // With a pipeline, the buffers of the exchange with the neighbouring stages.
    if (dims->pp > 1) {
        Dsv3PipeExchangeShape exchange =
            dsv3_plan_exchange_shape(args, opt, dims->tp, chunks, out->n_chunks);
        out->activation_bytes += dsv3_pipe_exchange_bytes(&exchange);
    }
    return DSV3_OK;
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
        optim[DSV3_FORMAT_CAPACITY], where[320], more[256] = "";
    dsv3_format_count(s->params, count);
    dsv3_format_bytes((double)s->params * DSV3_PLAN_PARAM_BYTES, params);
    dsv3_format_bytes((double)s->params * DSV3_PLAN_GRAD_BYTES, grads);
    dsv3_format_bytes((double)s->params * DSV3_PLAN_OPTIMIZER_BYTES, optim);
    if (s->role == DSV3_ROLE_STAGE) {
        size_t n = (size_t)snprintf(where, sizeof where,
                                    "stage pp %" PRId64 " dp_replicate %" PRId64
                                    " dp_shard %" PRId64 " cp %" PRId64 " tp %" PRId64 ";",
                                    s->coord.pp, s->coord.dp_replicate, s->coord.dp_shard,
                                    s->coord.cp, s->coord.tp);
        for (int64_t k = 0; k < s->n_chunks && n < sizeof where; k++) {
            const Dsv3StageRange *c = &s->chunks[k];
            n +=
                (size_t)(c->n_layers > 0
                             ? snprintf(where + n, sizeof where - n,
                                        "%s layers %" PRId64 "-%" PRId64, k ? "," : "",
                                        c->first_layer, c->first_layer + c->n_layers - 1)
                             : snprintf(where + n, sizeof where - n, "%s no layers", k ? "," : ""));
            if (n < sizeof where)
                n += (size_t)snprintf(where + n, sizeof where - n, "%s%s",
                                      c->first ? " + embedding" : "",
                                      c->last ? " + norm, output" : "");
        }
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
        size_t n = (size_t)snprintf(where, sizeof where,
                                    "expert pp %" PRId64 " ep %" PRId64 "; routed experts %" PRId64
                                    "-%" PRId64 " of the MoE layers among",
                                    s->pp_stage, s->ep_rank, s->first_expert,
                                    s->first_expert + s->expert_count - 1);
        for (int64_t k = 0; k < s->n_chunks && n < sizeof where; k++)
            n += (size_t)snprintf(where + n, sizeof where - n, "%s %" PRId64 "-%" PRId64,
                                  k ? "," : "", s->chunks[k].first_layer,
                                  s->chunks[k].first_layer + s->chunks[k].n_layers - 1);
    }
    snprintf(out, capacity, "rank %" PRId64 ": %s; %s params: %s params, %s grads, %s optimizer%s",
             s->job_rank, where, count, params, grads, optim, more);
}
