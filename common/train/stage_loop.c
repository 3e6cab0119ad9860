// stage_loop: receive micro-batches, compute, reduce, step, report.
#include "stage_loop.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ckpt/checkpoint.h"
#include "common/core/alloc.h"
#include "common/core/format.h"
#include "common/core/log.h"
#include "common/comm/collectives_mpi.h"
#include "common/comm/expert_exchange.h"
#include "common/comm/param_store_fsdp.h"
#include "common/comm/plan.h"
#include "common/comm/protocol.h"
#include "common/model/model.h"
#include "common/train/expert_load.h"
#include "common/train/optimizer.h"
#include "common/train/peak.h"
#include "common/train/pipeline_step.h"
#include "common/train/report.h"
#include "common/train/stage_runtime.h"
#include "common/train/trace.h"
#include "common/train/validation.h"

enum { CONTEXT_CAPACITY = 64 };
_Static_assert((int)DSV3_PROTOCOL_FQN_CAPACITY == (int)DSV3_FQN_CAPACITY,
               "a report carries a tensor name");

// The rank's models, one per pipeline stage it holds, with their stages and slots.
typedef struct {
    Dsv3Model *models[DSV3_PLAN_MAX_CHUNKS];
    Dsv3PlanChunk chunks[DSV3_PLAN_MAX_CHUNKS];
    int64_t n;
} Models;

// Sequence parallelism leaves each tp rank with its own rows' share of a replicated tensor's
// gradient (model/layer.h): summed over the tp group here, so that every tp rank steps the
// same values.
static Dsv3Err reduce_tensor_parallel(Dsv3ParamStore *st, Dsv3Collectives *c) {
    for (int g = 0; g < st->n_groups; g++) {
        const Dsv3ParamGroup *group = &st->groups[g];
        for (int slot = 0; slot < DSV3_PARAM_SLOT_COUNT; slot++) {
            const Dsv3Param *p = &group->params[slot];
            if (p->numel == 0 || p->tp != DSV3_TP_REPLICATE) continue;
            DSV3_CALL(c->all_reduce(c, DSV3_GROUP_TP, st->shards[g].grad + p->shard_offset,
                                    dsv3_param_shard_numel(p), DSV3_ELEM_F32, DSV3_REDUCE_SUM));
        }
    }
    return DSV3_OK;
}

// Completes the step's gradients of every model of the rank: each store finishes its
// reductions (an FSDP store has then summed them over the FSDP group and the HSDP replicas);
// replicated tensors are summed over the tp group; a store that keeps every group whole has
// them summed here over the data-parallel ranks (DSV3_GROUP_DP of the MPI collectives). The
// tokens per expert are summed over the tp ranks (each routes its own rows), the cp ranks
// (each its own positions) and the data-parallel ranks.
static Dsv3Err reduce_data_parallel(const Dsv3PipelineStage *stage, Dsv3CollectivesMpi *coll,
                                    int64_t step, Dsv3Trace *trace) {
    Dsv3Collectives *c = dsv3_collectives_mpi_interface(coll);
    char context[CONTEXT_CAPACITY];
    double t0 = dsv3_log_seconds();
    snprintf(context, sizeof context, "the gradients of step %lld", (long long)step);
    dsv3_collectives_mpi_set_context(coll, context);
    for (int64_t k = 0; k < stage->n_models; k++) {
        Dsv3ParamStore *st = dsv3_model_services(stage->models[k])->params;
        DSV3_CALL(st->ops->finish(st));
    }
    int64_t tp = 1, cp = 1, dp = 1, rank = 0;
    DSV3_CALL(c->group(c, DSV3_GROUP_TP, &tp, &rank));
    DSV3_CALL(c->group(c, DSV3_GROUP_CP, &cp, &rank));
    DSV3_CALL(c->group(c, DSV3_GROUP_DP, &dp, &rank));
    if (tp == 1 && cp == 1 && dp == 1) {
        dsv3_collectives_mpi_set_context(coll, NULL);
        return DSV3_OK;
    }
    for (int64_t k = 0; k < stage->n_models; k++) {
        Dsv3ParamStore *st = dsv3_model_services(stage->models[k])->params;
        if (tp > 1) DSV3_CALL(reduce_tensor_parallel(st, c));
        for (int g = 0; dp > 1 && st->fsdp_size == 1 && g < st->n_groups; g++)
            DSV3_CALL(c->all_reduce(c, DSV3_GROUP_DP, st->shards[g].grad, st->groups[g].shard_numel,
                                    DSV3_ELEM_F32, DSV3_REDUCE_SUM));
    }
    double t1 = dsv3_log_seconds();
    DSV3_CALL(dsv3_trace_add(trace, DSV3_PHASE_COMM_GRAD, -1, t0, t1));
    snprintf(context, sizeof context, "the tokens per expert of step %lld", (long long)step);
    dsv3_collectives_mpi_set_context(coll, context);
    const Dsv3ModelArgs *a = dsv3_model_args(stage->models[0]);
    for (int64_t l = 0; l < a->n_layers; l++) {
        Dsv3Model *owner = NULL;
        int64_t *counts = dsv3_pipeline_tokens_per_expert(stage, l, &owner);
        if (counts && tp > 1)
            DSV3_CALL(c->all_reduce(c, DSV3_GROUP_TP, counts, a->num_experts, DSV3_ELEM_I64,
                                    DSV3_REDUCE_SUM));
        if (counts && cp > 1)
            DSV3_CALL(c->all_reduce(c, DSV3_GROUP_CP, counts, a->num_experts, DSV3_ELEM_I64,
                                    DSV3_REDUCE_SUM));
        if (counts && dp > 1)
            DSV3_CALL(c->all_reduce(c, DSV3_GROUP_DP, counts, a->num_experts, DSV3_ELEM_I64,
                                    DSV3_REDUCE_SUM));
    }
    dsv3_collectives_mpi_set_context(coll, NULL);
    return dsv3_trace_add(trace, DSV3_PHASE_COMM_EXPERT_COUNTS, -1, t1, dsv3_log_seconds());
}

// The global squared gradient norm: this rank's shards, summed over the FSDP group when the
// store shards them (replicas hold the same sums and are not counted again) and over the tp
// group (optimizer.h: replicated tensors counted on tp rank 0); with expert
// servers, the stage's first rank's sum (every stage rank has it now) plus the servers' own;
// then summed over the pipeline stages (and handed to the servers, who are outside that sum).
static Dsv3Err grad_sum_squares(const Dsv3PipelineStage *stage, const Dsv3Launch *launch,
                                Dsv3CollectivesMpi *coll, Dsv3ExpertExchange *experts,
                                double *sum_squares, Dsv3ExpertServerStats *stats) {
    *sum_squares = 0;
    for (int64_t k = 0; k < stage->n_models; k++) {
        double mine = 0;
        DSV3_CALL(dsv3_optimizer_grad_sum_squares(stage->models[k], &mine));
        *sum_squares += mine;
    }
    if (dsv3_model_services(stage->models[0])->params->fsdp_size > 1) {
        Dsv3Collectives *c = dsv3_collectives_mpi_interface(coll);
        DSV3_CALL(
            c->all_reduce(c, DSV3_GROUP_FSDP, sum_squares, 1, DSV3_ELEM_F64, DSV3_REDUCE_SUM));
    }
    if (launch->topology.dims.tp > 1) { // each tp rank's pieces (replicated tensors once)
        Dsv3Collectives *c = dsv3_collectives_mpi_interface(coll);
        DSV3_CALL(c->all_reduce(c, DSV3_GROUP_TP, sum_squares, 1, DSV3_ELEM_F64, DSV3_REDUCE_SUM));
    }
    if (experts) {
        const Dsv3StageCoord *c = &launch->topology.coord;
        if (c->dp_replicate != 0 || c->dp_shard != 0 || c->cp != 0 || c->tp != 0) *sum_squares = 0;
        DSV3_CALL(dsv3_expert_exchange_step_sum(experts, sum_squares, NULL, stats));
    }
    if (launch->topology.dims.pp > 1) { // each pipeline stage has its own parameters
        Dsv3Collectives *c = dsv3_collectives_mpi_interface(coll);
        DSV3_CALL(c->all_reduce(c, DSV3_GROUP_PP, sum_squares, 1, DSV3_ELEM_F64, DSV3_REDUCE_SUM));
        if (experts) DSV3_CALL(dsv3_expert_exchange_share_sum(experts, sum_squares));
    }
    return DSV3_OK;
}

// The step's expert load of every layer: this stage's layers, and with a pipeline the other
// stages' (each rank holds zeros for the layers it does not run, so a sum over pp gathers them).
static Dsv3Err capture_expert_load(Dsv3ExpertLoad *load, const Dsv3PipelineStage *stage,
                                   const Dsv3Topology *t, Dsv3CollectivesMpi *coll) {
    dsv3_expert_load_capture(load, stage->models, stage->n_models);
    if (t->dims.pp == 1) return DSV3_OK;
    Dsv3Collectives *c = dsv3_collectives_mpi_interface(coll);
    int64_t n = load->n_layers * load->n_experts;
    DSV3_CALL(c->all_reduce(c, DSV3_GROUP_PP, load->counts, n, DSV3_ELEM_I64, DSV3_REDUCE_SUM));
    return c->all_reduce(c, DSV3_GROUP_PP, load->bias, n, DSV3_ELEM_F32, DSV3_REDUCE_SUM);
}

// One step on this rank; fills the report, the phase times in `trace` and, when the plan asks
// for it, the step's expert load.
static Dsv3Err stage_step(const Dsv3PipelineStage *stage, const Dsv3Launch *launch,
                          Dsv3CollectivesMpi *coll, Dsv3ExpertExchange *experts,
                          const Dsv3StepPlan *plan, int32_t *windows, int32_t *tokens,
                          int32_t *labels, Dsv3Trace *trace, Dsv3ExpertLoad *load,
                          Dsv3StepReport *r) {
    const Dsv3Config *cfg = &launch->config;
    const Dsv3Topology *t = &launch->topology;
    int64_t B = cfg->training.local_batch_size, T = cfg->training.seq_len;
    Dsv3BatchPart part = dsv3_layout_batch_part(&t->dims, &t->coord);
    memset(r, 0, sizeof *r);
    dsv3_trace_step_start(trace, (plan->flags & DSV3_PLAN_PROFILE) != 0);
    dsv3_trace_ops_begin(trace);
    dsv3_alloc_reset_peak();
    (void)dsv3_collectives_mpi_take_seconds(coll, DSV3_GROUP_TP); // what came before the step
    (void)dsv3_collectives_mpi_take_seconds(coll, DSV3_GROUP_CP);
    for (int64_t i = 0; i < plan->micro_batches; i++) {
        if (part != DSV3_BATCH_NONE) {
            double t_recv = dsv3_log_seconds();
            DSV3_CALL(
                dsv3_protocol_recv_batch(launch->protocol, i, part, windows, B, T, tokens, labels));
            DSV3_CALL(dsv3_trace_add(trace, DSV3_PHASE_COMM_BATCH, (int32_t)i, t_recv,
                                     dsv3_log_seconds()));
        }
        DSV3_CALL(dsv3_pipeline_run(stage, tokens, labels, (float)plan->grad_scale, trace,
                                    i * stage->schedule->n_micro, &r->loss_sum, &r->n_labels));
    }
    dsv3_stage_report_loss_once(t, &r->loss_sum, &r->n_labels);
    if (stage->exchange) {
        DSV3_CALL(dsv3_pipe_exchange_finish(stage->exchange));
        trace->seconds[DSV3_PHASE_PIPELINE_WAIT] =
            dsv3_pipe_exchange_take_wait_seconds(stage->exchange);
    }
    if (experts) {
        DSV3_CALL(dsv3_expert_exchange_end(experts));
        // Spread over the forward and backward passes above: sums without events.
        Dsv3ExpertTimes away = dsv3_expert_exchange_take_times(experts);
        trace->seconds[DSV3_PHASE_COMM_EXPERTS] = away.total_s;
        trace->seconds[DSV3_PHASE_EXPERTS_HIDDEN] = away.total_s - away.exposed_s;
    }
    DSV3_CALL(reduce_data_parallel(stage, coll, plan->step, trace));
    // The optimizer step clears the counts: keep the step's load first.
    if (plan->flags & DSV3_PLAN_EXPERT_LOAD) DSV3_CALL(capture_expert_load(load, stage, t, coll));
    double t1 = dsv3_log_seconds();
    double sum_squares = 0;
    for (int64_t k = 0; k < stage->n_models; k++)
        DSV3_CALL(dsv3_optimizer_test_inject(stage->models[k], plan->step));
    DSV3_CALL(grad_sum_squares(stage, launch, coll, experts, &sum_squares, &r->experts));
    Dsv3OptimizerStep step = dsv3_optimizer_step_of(cfg, plan->lr, plan->step);
    // The norm is global, so every rank takes the same branch; a step with NaN or infinite
    // gradients changes no state (the coordinator stops the run or counts it as skipped). The
    // report names the first group (forward order, over the rank's models in turn) at fault.
    r->nonfinite_group = -1;
    for (int64_t k = 0, groups_before = 0; k < stage->n_models; k++) {
        Dsv3Model *m = stage->models[k];
        if (isfinite(sum_squares)) {
            DSV3_CALL(dsv3_optimizer_step(m, &step, sum_squares));
            continue;
        }
        int32_t group = -1;
        char fqn[DSV3_FQN_CAPACITY];
        DSV3_CALL(dsv3_optimizer_skip(m, &group, fqn));
        if (group >= 0 && r->nonfinite_group < 0) {
            r->nonfinite_group = (int32_t)(groups_before + group);
            snprintf(r->nonfinite_fqn, sizeof r->nonfinite_fqn, "%s", fqn);
        }
        groups_before += dsv3_model_services(m)->params->n_groups;
    }
    r->grad_norm = sqrt(sum_squares);
    DSV3_CALL(dsv3_trace_add(trace, DSV3_PHASE_OPTIMIZER, -1, t1, dsv3_log_seconds()));
    // Spread over forward, backward and the grad norm: a sum without events.
    trace->seconds[DSV3_PHASE_COMM_TP] = dsv3_collectives_mpi_take_seconds(coll, DSV3_GROUP_TP);
    trace->seconds[DSV3_PHASE_COMM_CP] = dsv3_collectives_mpi_take_seconds(coll, DSV3_GROUP_CP);
    DSV3_CALL(dsv3_trace_ops_end(trace));
    memcpy(r->seconds, trace->seconds, sizeof r->seconds);
    r->bytes_current = (int64_t)dsv3_alloc_current_bytes();
    r->bytes_peak = (int64_t)dsv3_alloc_peak_bytes();
    r->device_bytes = dsv3_peak_device_memory_bytes();
    return DSV3_OK;
}

// End of training, on every stage rank: the largest step peak of allocated memory against the
// plan of this rank (comm/plan.h, what --job.dry_run prints), and the FSDP store's share of
// communication that overlapped compute.
static Dsv3Err log_memory_and_overlap(const Dsv3Launch *launch, const Dsv3PipelineStage *stage,
                                      int64_t peak) {
    const Dsv3Topology *t = &launch->topology;
    Dsv3PlanOptions opt;
    DSV3_CALL(dsv3_plan_options_from_config(&launch->config, &opt));
    Dsv3RankShare share;
    DSV3_CALL(dsv3_plan_rank(&launch->model, &t->dims, &opt, t->job_rank, &share));
    int64_t planned = dsv3_plan_total_bytes(&share);
    char measured_text[DSV3_FORMAT_CAPACITY], planned_text[DSV3_FORMAT_CAPACITY];
    DSV3_LOG_INFO("memory: peak %" PRId64 " bytes (%s) on this rank, planned %" PRId64
                  " bytes (%s): %.2f%% of the plan",
                  peak, dsv3_format_bytes((double)peak, measured_text), planned,
                  dsv3_format_bytes((double)planned, planned_text),
                  planned > 0 ? 100.0 * (double)peak / (double)planned : 0.0);
    if (dsv3_model_services(stage->models[0])->params->fsdp_size == 1) return DSV3_OK;
    Dsv3FsdpTimes times = {0};
    for (int64_t k = 0; k < stage->n_models; k++) {
        Dsv3FsdpTimes mine =
            dsv3_param_store_fsdp_times(dsv3_model_services(stage->models[k])->params);
        times.bytes += mine.bytes;
        times.comm_seconds += mine.comm_seconds;
        times.wait_seconds += mine.wait_seconds;
    }
    char moved[DSV3_FORMAT_CAPACITY];
    DSV3_LOG_INFO(
        "fsdp: %s gathered and reduce-scattered; communication %.3f s, of which "
        "%.3f s waited: %.1f%% hidden behind compute",
        dsv3_format_bytes((double)times.bytes, moved), times.comm_seconds, times.wait_seconds,
        times.comm_seconds > 0 ? 100.0 * (1.0 - times.wait_seconds / times.comm_seconds) : 100.0);
    return DSV3_OK;
}

// This rank's models, one per pipeline stage it holds (their stores are collective on the FSDP
// group, in the same order on every rank of it).
static Dsv3Err models_create(Models *ms, const Dsv3Launch *launch, int32_t eos_id,
                             Dsv3CollectivesMpi *coll, Dsv3ExpertExchange *experts) {
    const Dsv3Topology *t = &launch->topology;
    Dsv3PlanOptions opt;
    DSV3_CALL(dsv3_plan_options_from_config(&launch->config, &opt));
    DSV3_CALL(dsv3_plan_rank_chunks(&opt, t->dims.pp, t->coord.pp, ms->chunks));
    for (; ms->n < opt.pipe.stages_per_rank; ms->n++) {
        DSV3_CALL(dsv3_stage_model_create(&ms->models[ms->n], launch, &ms->chunks[ms->n], eos_id,
                                          coll,
                                          experts ? dsv3_expert_exchange_experts(experts) : NULL));
    }
    return DSV3_OK;
}

static void models_destroy(Models *ms) {
    for (int64_t k = 0; k < ms->n; k++)
        dsv3_model_destroy(ms->models[k]);
}

// This rank's schedule and, with a pipeline, the exchange with its neighbouring stages.
static Dsv3Err pipeline_create(Dsv3PipelineStage *stage, Dsv3PipeSchedule *schedule,
                               const Dsv3Launch *launch, const Models *ms) {
    const Dsv3Topology *t = &launch->topology;
    Dsv3PlanOptions opt;
    DSV3_CALL(dsv3_plan_options_from_config(&launch->config, &opt));
    DSV3_CALL(dsv3_pipe_schedule_create(schedule, opt.pipe.kind, t->dims.pp, opt.pipe.n_micro,
                                        opt.pipe.stages_per_rank, opt.pipe.overlap_pairs));
    *stage = (Dsv3PipelineStage){.models = ms->models,
                                 .n_models = ms->n,
                                 .schedule = schedule,
                                 .rank = t->coord.pp,
                                 .chunks = ms->chunks,
                                 .micro_tokens = opt.pipe.micro_batch * opt.model.seq_len};
    if (t->dims.pp == 1) return DSV3_OK;
    Dsv3PipeExchangeShape shape =
        dsv3_plan_exchange_shape(&launch->model, &opt, launch->topology.dims.tp, ms->chunks, ms->n);
    return dsv3_pipe_exchange_create(&stage->exchange, t, &shape,
                                     dsv3_protocol_watch(launch->protocol));
}

Dsv3Err dsv3_stage_train(Dsv3Launch *launch) {
    const Dsv3Config *cfg = &launch->config;
    int64_t B = cfg->training.local_batch_size, T = cfg->training.seq_len;
    Dsv3Protocol *p = launch->protocol;
    Dsv3StepPlan plan; // the start plan (step 0) carries the EOS id
    DSV3_CALL(dsv3_protocol_recv_plan(p, &plan));
    double t0 = dsv3_log_seconds();
    Models models = {0};
    Dsv3CollectivesMpi *coll = NULL;
    Dsv3ExpertExchange *experts = NULL; // the stage's expert servers, when the job has them
    int32_t *windows = NULL, *tokens = NULL, *labels = NULL;
    Dsv3Trace trace = {0};
    Dsv3ExpertLoad load = {0};
    Dsv3PipeSchedule schedule = {0};
    Dsv3PipelineStage stage = {0};
    Dsv3Err err = DSV3_OK;
    int64_t trained = 0; // training steps completed in this run
    int64_t peak = 0;    // the largest step peak of allocated bytes
    DSV3_CALL_GOTO(err, done,
                   dsv3_collectives_mpi_create(&coll, &launch->topology, dsv3_protocol_watch(p)));
    if (launch->topology.n_expert > 0)
        DSV3_CALL_GOTO(err, done,
                       dsv3_expert_exchange_create(&experts, &launch->topology, &launch->model,
                                                   dsv3_protocol_watch(p)));
    DSV3_CALL_GOTO(err, done, models_create(&models, launch, plan.eos_id, coll, experts));
    DSV3_CALL_GOTO(err, done, pipeline_create(&stage, &schedule, launch, &models));
    char bytes[DSV3_FORMAT_CAPACITY];
    dsv3_log(
        launch->topology.stage_index == 0 ? DSV3_LOG_INFO : DSV3_LOG_DEBUG,
        "start-up: allocation: model built and initialised in %.2f s, %s allocated on this rank",
        dsv3_log_seconds() - t0, dsv3_format_bytes((double)dsv3_alloc_current_bytes(), bytes));
    DSV3_CALL_GOTO(err, done, dsv3_expert_load_create(&load, &launch->model));
    DSV3_CALL_GOTO(err, done, dsv3_peak_start_stage(launch));
    // After the peak measurement, in the coordinator's order of start-up collectives.
    const Dsv3CkptRank ckpt = {.models = models.models, .n_models = models.n};
    DSV3_CALL_GOTO(err, done, dsv3_ckpt_rank_start(launch, &ckpt));
    DSV3_CALL_GOTO(
        err, done,
        dsv3_alloc((void **)&windows, (size_t)(B * (T + 1)) * sizeof *windows, "token windows"));
    DSV3_CALL_GOTO(err, done,
                   dsv3_alloc((void **)&tokens, (size_t)(B * T) * sizeof *tokens, "tokens"));
    DSV3_CALL_GOTO(err, done,
                   dsv3_alloc((void **)&labels, (size_t)(B * T) * sizeof *labels, "labels"));
    // Ready: the first step's clock starts when every rank is here.
    DSV3_CALL_GOTO(err, done, dsv3_protocol_ready(p));
    DSV3_CALL_GOTO(err, done, dsv3_protocol_recv_plan(p, &plan));
    while (!plan.stop) {
        // Until the first step is over, and after a checkpoint save switched to it, the start-up
        // deadline applies; then training's.
        dsv3_protocol_set_patience(p, trained > 0 ? DSV3_PATIENCE_TRAIN : DSV3_PATIENCE_INIT);
        Dsv3StepReport report;
        if (plan.validate) {
            DSV3_CALL_GOTO(
                err, done,
                dsv3_validation_stage(&stage, launch, &plan, windows, tokens, labels, &report));
            if (stage.exchange) {
                DSV3_CALL_GOTO(err, done, dsv3_pipe_exchange_finish(stage.exchange));
                dsv3_pipe_exchange_take_wait_seconds(stage.exchange); // not a training step's
            }
            if (experts) {
                DSV3_CALL_GOTO(err, done, dsv3_expert_exchange_end(experts));
                dsv3_expert_exchange_take_times(experts); // not a training step's
            }
        } else {
            DSV3_CALL_GOTO(err, done,
                           stage_step(&stage, launch, coll, experts, &plan, windows, tokens, labels,
                                      &trace, &load, &report));
        }
        DSV3_CALL_GOTO(err, done, dsv3_report_send(launch, &plan, &report, &load, &trace));
        if (!plan.validate) {
            trained++;
            if (report.bytes_peak > peak) peak = report.bytes_peak;
            dsv3_protocol_set_patience(p, DSV3_PATIENCE_TRAIN);
            DSV3_CALL_GOTO(err, done, dsv3_ckpt_rank_step(launch, &ckpt));
        }
        DSV3_CALL_GOTO(err, done, dsv3_protocol_recv_plan(p, &plan));
    }
    if (trained > 0) DSV3_CALL_GOTO(err, done, log_memory_and_overlap(launch, &stage, peak));
done:
    dsv3_pipe_exchange_destroy(stage.exchange);
    dsv3_pipe_schedule_destroy(&schedule);
    dsv3_free(windows);
    dsv3_free(tokens);
    dsv3_free(labels);
    dsv3_trace_destroy(&trace);
    dsv3_expert_load_destroy(&load);
    models_destroy(&models);
    dsv3_expert_exchange_destroy(experts);
    dsv3_collectives_mpi_destroy(coll);
    return err;
}
