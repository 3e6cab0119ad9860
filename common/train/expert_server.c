// expert_server: the expert server's store, its service loop, its optimizer step.
// Legend: El experts of this server, D dim, F moe_inter_dim, M rows of a request.
#include "expert_server.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/ckpt/checkpoint.h"
#include "common/comm/expert_exchange.h"
#include "common/comm/layout.h"
#include "common/comm/plan.h"
#include "common/comm/protocol.h"
#include "common/core/alloc.h"
#include "common/core/format.h"
#include "common/core/log.h"
#include "common/core/stop_signal.h"
#include "common/model/experts.h"
#include "common/model/param_store.h"
#include "common/train/optimizer.h"

enum { NO_DEVICE = -1 };

// What one MoE layer's backward needs of its last forward of one activation slot.
typedef struct {
    float *xs, *h1, *h3; // (M, D), (M, F), (M, F)
    int64_t *offsets;    // (El + 1)
    int64_t rows, capacity;
} Saved;

// The experts of one pipeline stage the server's stage ranks hold (several under a looped
// schedule), and what backward keeps of its layers.
typedef struct {
    int64_t first_layer, n_layers;
    int64_t slots; // the stage ranks' activation slots of this stage
    Saved *saved;  // (n_layers, slots) by (layer − first_layer, slot)
    Dsv3LocalExperts experts;
} Part;

typedef struct {
    const Dsv3Launch *launch;
    Dsv3KernelContext kernels;
    void *workspace;
    Dsv3ParamStore *stores[DSV3_PLAN_MAX_CHUNKS]; // the parts' experts, in the parts' order
    Part parts[DSV3_PLAN_MAX_CHUNKS];
    int64_t n_parts;
    Dsv3ExpertExchange *exchange;
    int64_t El, D, F;
    float *out, *in; // a request's results and its incoming gradients (scratch, M × D each)
    int64_t scratch; // rows out and in hold
    Dsv3ExpertServerWork done; // in all: rows received (forward and backward), seconds
    Dsv3ExpertServerWork step; // the same at the start of the step
} Server;

// Grows *buf to hold `count` elements of `size` bytes (contents not kept).
static Dsv3Err grow(void **buf, int64_t count, size_t size, const char *what) {
    dsv3_free(*buf);
    *buf = NULL;
    return dsv3_alloc(buf, (size_t)(count > 0 ? count : 1) * size, what);
}

// Room for `rows` rows in the layer's saved activations.
static Dsv3Err saved_reserve(Server *s, Saved *sv, int64_t rows) {
    if (rows <= sv->capacity) return DSV3_OK;
    int64_t capacity = rows + rows / 4; // routing moves a little from step to step
    sv->capacity = 0;
    DSV3_CALL(grow((void **)&sv->xs, capacity * s->D, sizeof(float), "expert rows (saved)"));
    DSV3_CALL(grow((void **)&sv->h1, capacity * s->F, sizeof(float), "expert h1 (saved)"));
    DSV3_CALL(grow((void **)&sv->h3, capacity * s->F, sizeof(float), "expert h3 (saved)"));
    sv->capacity = capacity;
    return DSV3_OK;
}

static Dsv3Err scratch_reserve(Server *s, int64_t rows) {
    if (rows <= s->scratch) return DSV3_OK;
    int64_t capacity = rows + rows / 4;
    s->scratch = 0;
    DSV3_CALL(grow((void **)&s->out, capacity * s->D, sizeof(float), "expert results"));
    DSV3_CALL(grow((void **)&s->in, capacity * s->D, sizeof(float), "expert output gradients"));
    s->scratch = capacity;
    return DSV3_OK;
}

// The kernel workspace for `op` over `rows` rows (grown when a request needs more).
static Dsv3Err workspace_reserve(Server *s, Dsv3Op op, const Dsv3OpShape *shape) {
    size_t need = 0;
    DSV3_CALL(dsv3_workspace_bytes(&s->kernels, op, shape, &need));
    if (need <= s->kernels.workspace_bytes) return DSV3_OK;
    if (s->workspace) dsv3_memory_free(&s->kernels, s->workspace);
    s->workspace = NULL;
    s->kernels.workspace = NULL;
    s->kernels.workspace_bytes = 0;
    DSV3_CALL(dsv3_memory_alloc(&s->kernels, &s->workspace, need, "kernel workspace"));
    s->kernels.workspace = s->workspace;
    s->kernels.workspace_bytes = need;
    return DSV3_OK;
}

static Dsv3Err serve_forward(Server *s, const Dsv3ExpertRequest *req, Part *part, Saved *sv) {
    DSV3_CALL(saved_reserve(s, sv, req->rows));
    DSV3_CALL(scratch_reserve(s, req->rows));
    double t0 = dsv3_log_seconds();
    DSV3_CALL(dsv3_expert_exchange_receive(s->exchange, sv->xs));
    double t1 = dsv3_log_seconds();
    memcpy(sv->offsets, req->offsets, (size_t)(s->El + 1) * sizeof *sv->offsets);
    sv->rows = req->rows;
    Dsv3OpShape shape = {.E = s->El, .D = s->D, .F = s->F, .M = req->rows};
    DSV3_CALL(workspace_reserve(s, DSV3_OP_EXPERTS_FORWARD, &shape));
    DSV3_CALL(part->experts.base.forward(&part->experts.base, req->layer, req->slot,
                                         DSV3_TENSOR_F32, s->out, sv->h1, sv->h3, sv->xs,
                                         sv->offsets));
    double t2 = dsv3_log_seconds();
    DSV3_CALL(dsv3_expert_exchange_reply(s->exchange, s->out));
    s->done.idle_s += t1 - t0;
    s->done.compute_s += t2 - t1;
    return DSV3_OK;
}

static Dsv3Err serve_backward(Server *s, const Dsv3ExpertRequest *req, Part *part, Saved *sv) {
    DSV3_CHECK(sv->rows == req->rows && memcmp(sv->offsets, req->offsets,
                                               (size_t)(s->El + 1) * sizeof *sv->offsets) == 0,
               DSV3_ERR_INTERNAL,
               "expert server: the backward of layer %" PRId64 " slot %" PRId64 " brings %" PRId64
               " rows routed differently from its forward's %" PRId64,
               req->layer, req->slot, req->rows, sv->rows);
    DSV3_CALL(scratch_reserve(s, req->rows));
    double t0 = dsv3_log_seconds();
    DSV3_CALL(dsv3_expert_exchange_receive(s->exchange, s->in));
    double t1 = dsv3_log_seconds();
    Dsv3OpShape shape = {.E = s->El, .D = s->D, .F = s->F, .M = req->rows};
    DSV3_CALL(workspace_reserve(s, DSV3_OP_EXPERTS_BACKWARD, &shape));
    DSV3_CALL(part->experts.base.backward(&part->experts.base, req->layer, req->slot,
                                          DSV3_TENSOR_F32, s->out, s->in, sv->xs, sv->h1, sv->h3,
                                          sv->offsets));
    double t2 = dsv3_log_seconds();
    DSV3_CALL(dsv3_expert_exchange_reply(s->exchange, s->out));
    s->done.idle_s += t1 - t0;
    s->done.compute_s += t2 - t1;
    return DSV3_OK;
}

// Serves requests until the stage ranks end the pass.
static Dsv3Err serve_pass(Server *s) {
    for (;;) {
        Dsv3ExpertRequest req;
        double t0 = dsv3_log_seconds();
        DSV3_CALL(dsv3_expert_exchange_next(s->exchange, &req));
        s->done.idle_s += dsv3_log_seconds() - t0;
        if (req.op == DSV3_EXPERT_END) return DSV3_OK;
        Part *part = NULL;
        for (int64_t k = 0; k < s->n_parts && !part; k++)
            if (req.layer >= s->parts[k].first_layer &&
                req.layer < s->parts[k].first_layer + s->parts[k].n_layers)
                part = &s->parts[k];
        DSV3_CHECK(part && req.layer >= s->launch->model.n_dense_layers, DSV3_ERR_INTERNAL,
                   "expert server: a request for layer %" PRId64
                   ", which is not a MoE layer of the stages of pipeline rank %" PRId64,
                   req.layer, s->launch->topology.pp_stage);
        DSV3_CHECK(req.slot >= 0 && req.slot < part->slots, DSV3_ERR_INTERNAL,
                   "expert server: a request for activation slot %" PRId64 " of layer %" PRId64
                   ", outside its stage's %" PRId64 " slots",
                   req.slot, req.layer, part->slots);
        s->done.rows += (double)req.rows;
        Saved *sv = &part->saved[(req.layer - part->first_layer) * part->slots + req.slot];
        if (req.op == DSV3_EXPERT_FORWARD)
            DSV3_CALL(serve_forward(s, &req, part, sv));
        else
            DSV3_CALL(serve_backward(s, &req, part, sv));
    }
}

// A training step: the pass, then the global norm and this server's optimizer step.
static Dsv3Err server_step(Server *s, const Dsv3StepPlan *plan) {
    DSV3_CALL(serve_pass(s));
    int64_t largest = 0;
    for (int64_t k = 0; k < s->n_parts; k++) {
        Dsv3ParamStore *st = s->stores[k];
        DSV3_CALL(st->ops->finish(st));
        for (int g = 0; g < st->n_groups; g++)
            if (st->groups[g].shard_numel > largest) largest = st->groups[g].shard_numel;
    }
    const Dsv3Op ops[] = {DSV3_OP_SUM_SQUARES, DSV3_OP_SCALE, DSV3_OP_ADAMW_STEP};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        DSV3_CALL(workspace_reserve(s, ops[i], &(Dsv3OpShape){.N = largest}));
    double sum_squares = 0;
    for (int64_t k = 0; k < s->n_parts; k++) {
        double mine = 0;
        DSV3_CALL(dsv3_optimizer_store_sum_squares(&s->kernels, s->stores[k], &mine));
        sum_squares += mine;
    }
    Dsv3ExpertServerWork work = {.rows = s->done.rows - s->step.rows,
                                 .compute_s = s->done.compute_s - s->step.compute_s,
                                 .idle_s = s->done.idle_s - s->step.idle_s,
                                 .stop_signal = dsv3_stop_signal_received()};
    s->step = s->done;
    DSV3_CALL(dsv3_expert_exchange_step_sum(s->exchange, &sum_squares, &work, NULL));
    if (s->launch->topology.dims.pp > 1) // the stage ranks sum it over the stages
        DSV3_CALL(dsv3_expert_exchange_share_sum(s->exchange, &sum_squares));
    if (!isfinite(sum_squares)) {
        for (int64_t k = 0; k < s->n_parts; k++) {
            int32_t group = -1;
            char fqn[DSV3_FQN_CAPACITY];
            DSV3_CALL(dsv3_optimizer_store_skip(&s->kernels, s->stores[k], &group, fqn));
            if (group >= 0)
                DSV3_LOG_WARN("step %" PRId64 ": NaN or infinite values in the gradient of %s on "
                              "this expert server; its experts were not updated",
                              plan->step, fqn);
        }
        return DSV3_OK;
    }
    Dsv3OptimizerStep step = dsv3_optimizer_step_of(&s->launch->config, plan->lr, plan->step);
    for (int64_t k = 0; k < s->n_parts; k++)
        DSV3_CALL(dsv3_optimizer_store_step(&s->kernels, s->stores[k], &step, sum_squares));
    return DSV3_OK;
}

static void server_destroy(Server *s) {
    for (int64_t k = 0; k < DSV3_PLAN_MAX_CHUNKS; k++) {
        Part *part = &s->parts[k];
        for (int64_t i = 0; part->saved && i < part->n_layers * part->slots; i++) {
            dsv3_free(part->saved[i].xs);
            dsv3_free(part->saved[i].h1);
            dsv3_free(part->saved[i].h3);
            dsv3_free(part->saved[i].offsets);
        }
        dsv3_free(part->saved);
        dsv3_param_store_destroy(s->stores[k]);
    }
    dsv3_free(s->out);
    dsv3_free(s->in);
    dsv3_expert_exchange_destroy(s->exchange);
    if (s->workspace) dsv3_memory_free(&s->kernels, s->workspace);
    dsv3_kernel_context_destroy(&s->kernels);
}

// Part k: the experts of pipeline stage `chunk` of the server's pipeline rank, their store and
// the room for what backward keeps.
static Dsv3Err part_create(Server *s, int64_t k, const Dsv3PlanOptions *plan,
                           const Dsv3PlanChunk *chunk) {
    const Dsv3Topology *t = &s->launch->topology;
    const Dsv3ModelArgs *args = &s->launch->model;
    Part *part = &s->parts[k];
    Dsv3StageRange range;
    DSV3_CALL(dsv3_plan_stage_range(args, plan, chunk->stage, &range));
    range =
        (Dsv3StageRange){.first_layer = range.first_layer, .n_layers = range.n_layers, .routed = 1};
    part->first_layer = range.first_layer;
    part->n_layers = range.n_layers;
    part->slots = chunk->slots;
    Dsv3ShardSpec spec = dsv3_shard_none;
    spec.ep = t->dims.ep;
    spec.ep_rank = t->ep_rank;
    DSV3_CALL(dsv3_param_store_local_create(&s->stores[k], &s->kernels, args, &range, &spec,
                                            (uint64_t)s->launch->config.debug.seed));
    dsv3_local_experts_init(&part->experts, s->stores[k], &s->kernels);
    int64_t n_saved = part->n_layers * part->slots;
    DSV3_CALL(dsv3_calloc((void **)&part->saved, (size_t)(n_saved > 0 ? n_saved : 1),
                          sizeof *part->saved, "saved expert activations"));
    for (int64_t i = 0; i < n_saved; i++)
        DSV3_CALL(dsv3_calloc((void **)&part->saved[i].offsets, (size_t)(s->El + 1),
                              sizeof *part->saved[i].offsets, "saved expert offsets"));
    return DSV3_OK;
}

// The stores of this server's experts, the experts over them, the exchange with the stage ranks.
static Dsv3Err server_create(Server *s, const Dsv3Launch *launch) {
    const Dsv3Topology *t = &launch->topology;
    const Dsv3ModelArgs *args = &launch->model;
    s->launch = launch;
    s->El = args->num_experts / t->dims.ep;
    s->D = args->dim;
    s->F = args->moe_inter_dim;
    DSV3_CALL(
        dsv3_expert_exchange_create(&s->exchange, t, args, dsv3_protocol_watch(launch->protocol)));
    Dsv3PlanOptions plan;
    DSV3_CALL(dsv3_plan_options_from_config(&launch->config, &plan));
    Dsv3PlanChunk chunks[DSV3_PLAN_MAX_CHUNKS];
    DSV3_CALL(dsv3_plan_rank_chunks(&plan, t->dims.pp, t->pp_stage, chunks));
    DSV3_CALL(dsv3_kernel_context_create(&s->kernels, DSV3_BACKEND_CPU, NO_DEVICE));
    DSV3_CALL(dsv3_model_kernels_matmul(&s->kernels, plan.model.matmul_dtype));
    for (; s->n_parts < plan.pipe.stages_per_rank; s->n_parts++)
        DSV3_CALL(part_create(s, s->n_parts, &plan, &chunks[s->n_parts]));
    return DSV3_OK;
}

static void log_served(const Server *s, int64_t steps) {
    char bytes[DSV3_FORMAT_CAPACITY], params[DSV3_FORMAT_CAPACITY], owned[DSV3_FORMAT_CAPACITY],
        peak[DSV3_FORMAT_CAPACITY];
    const Dsv3Topology *t = &s->launch->topology;
    double param_bytes = 0;
    for (int64_t k = 0; k < s->n_parts; k++)
        param_bytes += (double)dsv3_param_store_numel(s->stores[k]) * sizeof(float);
    DSV3_LOG_INFO("expert server %" PRId64 " (stage %" PRId64 ", experts %" PRId64 "–%" PRId64
                  "): %" PRId64 " steps, %.0f rows received, %s exchanged (%" PRId64
                  " bytes; the rows alone, in and out: %.0f); %.2f s computing, "
                  "%.2f s waiting; %s of parameters, %s with gradients and AdamW state; peak %s "
                  "allocated",
                  t->expert_index, t->pp_stage, t->ep_rank * s->El, (t->ep_rank + 1) * s->El - 1,
                  steps, s->done.rows,
                  dsv3_format_bytes((double)dsv3_expert_exchange_bytes(s->exchange), bytes),
                  dsv3_expert_exchange_bytes(s->exchange), 2.0 * s->done.rows * (double)s->D * 4,
                  s->done.compute_s, s->done.idle_s, dsv3_format_bytes(param_bytes, params),
                  dsv3_format_bytes(4 * param_bytes, owned),
                  dsv3_format_bytes((double)dsv3_alloc_peak_bytes(), peak));
}

Dsv3Err dsv3_expert_server_train(Dsv3Launch *launch) {
    Dsv3Protocol *p = launch->protocol;
    Dsv3StepPlan plan; // the start plan
    DSV3_CALL(dsv3_protocol_recv_plan(p, &plan));
    Server s = {0};
    Dsv3Err err = DSV3_OK;
    int64_t trained = 0;
    DSV3_CALL_GOTO(err, done, server_create(&s, launch));
    // The stage ranks' start-up order: peak, checkpoint load, ready.
    if (launch->config.metrics.peak_tflops <= 0)
        DSV3_CALL_GOTO(err, done, dsv3_protocol_share_peak(p, 0, NULL));
    Dsv3CkptRank rank = {.stores = s.stores, .n_stores = s.n_parts};
    DSV3_CALL_GOTO(err, done, dsv3_ckpt_rank_start(launch, &rank));
    DSV3_CALL_GOTO(err, done, dsv3_protocol_ready(p));
    DSV3_CALL_GOTO(err, done, dsv3_protocol_recv_plan(p, &plan));
    while (!plan.stop) {
        dsv3_protocol_set_patience(p, trained > 0 ? DSV3_PATIENCE_TRAIN : DSV3_PATIENCE_INIT);
        if (plan.validate) {
            DSV3_CALL_GOTO(err, done, serve_pass(&s));
        } else {
            DSV3_CALL_GOTO(err, done, server_step(&s, &plan));
            trained++;
            dsv3_protocol_set_patience(p, DSV3_PATIENCE_TRAIN);
            DSV3_CALL_GOTO(err, done, dsv3_ckpt_rank_step(launch, &rank));
        }
        DSV3_CALL_GOTO(err, done, dsv3_protocol_recv_plan(p, &plan));
    }
    if (trained > 0) log_served(&s, trained);
done:
    server_destroy(&s);
    return err;
}
