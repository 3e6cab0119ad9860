// pipeline_step: interprets this rank's schedule list for one training micro-batch.
#include "pipeline_step.h"

#include "common/core/log.h"

static Dsv3Err trace_add(Dsv3Trace *trace, Dsv3Phase phase, int64_t micro, int64_t stage,
                         double t0) {
    if (!trace) return DSV3_OK;
    return dsv3_trace_add_stage(trace, phase, (int32_t)micro, (int32_t)stage, t0,
                                dsv3_log_seconds());
}

// The model of stage `stage` on this rank, and the exchange's number of its slot for `micro`.
static Dsv3Model *stage_model(const Dsv3PipelineStage *p, int64_t stage, int64_t micro,
                              int64_t *slot, int64_t *exchange_slot) {
    int64_t k = 0;
    dsv3_pipe_rank_of(p->schedule, stage, &k);
    *slot = micro % p->chunks[k].slots;
    *exchange_slot = *slot;
    for (int64_t j = 0; j < k; j++)
        *exchange_slot += p->chunks[j].slots;
    return p->models[k];
}

static Dsv3Err run_forward(const Dsv3PipelineStage *p, const Dsv3PipeAction *a,
                           const int32_t *tokens, Dsv3Trace *trace, int64_t trace_micro) {
    int64_t slot, exchange_slot;
    Dsv3Model *m = stage_model(p, a->stage, a->micro, &slot, &exchange_slot);
    Dsv3StageInput in = {0};
    if (a->stage == 0)
        in.tokens = tokens + a->micro * p->micro_tokens;
    else
        DSV3_CALL(
            dsv3_pipe_exchange_wait_activations(p->exchange, a->micro, a->stage, &in.x, &in.doc));
    if (p->exchange) DSV3_CALL(dsv3_pipe_exchange_release_slot(p->exchange, exchange_slot));
    double t0 = dsv3_log_seconds();
    DSV3_CALL(dsv3_model_forward(m, slot, &in));
    return trace_add(trace, DSV3_PHASE_FORWARD, trace_micro + a->micro, a->stage, t0);
}

// The pipeline rank of the stage after (`step` 1) or before (−1) stage `stage`.
static int64_t neighbour(const Dsv3PipelineStage *p, int64_t stage, int64_t step) {
    return dsv3_pipe_rank_of(p->schedule, stage + step, NULL);
}

// B, or I where the schedule splits backward (the model then keeps the weight gradients'
// inputs in the slot until W). A B of a model that splits adds its weight gradients at once.
static Dsv3Err run_backward(const Dsv3PipelineStage *p, const Dsv3PipeAction *a,
                            const int32_t *labels, float grad_scale, Dsv3Trace *trace,
                            int64_t trace_micro, double *loss_sum, int64_t *n_labels) {
    const Dsv3PipeSchedule *s = p->schedule;
    int64_t slot, exchange_slot;
    Dsv3Model *m = stage_model(p, a->stage, a->micro, &slot, &exchange_slot);
    Dsv3StageGrad grad = {.grad_scale = grad_scale};
    if (a->stage == dsv3_pipe_stage_count(s) - 1)
        grad.labels = labels + a->micro * p->micro_tokens;
    else
        DSV3_CALL(dsv3_pipe_exchange_wait_gradient(p->exchange, a->micro, a->stage, &grad.dout));
    double t0 = dsv3_log_seconds(), loss = 0;
    int64_t n = 0;
    DSV3_CALL(dsv3_model_backward(m, slot, &grad, &loss, &n));
    if (a->op == DSV3_PIPE_B) DSV3_CALL(dsv3_model_backward_weight(m, slot));
    *loss_sum += loss;
    *n_labels += n;
    return trace_add(trace, DSV3_PHASE_BACKWARD, trace_micro + a->micro, a->stage, t0);
}

static Dsv3Err run_weight(const Dsv3PipelineStage *p, const Dsv3PipeAction *a, Dsv3Trace *trace,
                          int64_t trace_micro) {
    int64_t slot, exchange_slot;
    Dsv3Model *m = stage_model(p, a->stage, a->micro, &slot, &exchange_slot);
    double t0 = dsv3_log_seconds();
    DSV3_CALL(dsv3_model_backward_weight(m, slot));
    return trace_add(trace, DSV3_PHASE_BACKWARD_WEIGHT, trace_micro + a->micro, a->stage, t0);
}

Dsv3Err dsv3_pipeline_run(const Dsv3PipelineStage *p, const int32_t *tokens, const int32_t *labels,
                          float grad_scale, Dsv3Trace *trace, int64_t trace_micro, double *loss_sum,
                          int64_t *n_labels) {
    const Dsv3PipeSchedule *s = p->schedule;
    int forward_only = grad_scale == 0;
    int64_t last_stage = dsv3_pipe_stage_count(s) - 1;
    for (int64_t i = s->first[p->rank]; i < s->first[p->rank + 1]; i++) {
        const Dsv3PipeAction *a = &s->actions[i];
        switch (a->op) {
        case DSV3_PIPE_F: DSV3_CALL(run_forward(p, a, tokens, trace, trace_micro)); break;
        case DSV3_PIPE_RECV_F:
            DSV3_CALL(dsv3_pipe_exchange_post_activations(p->exchange, a->micro, a->stage,
                                                          neighbour(p, a->stage, -1)));
            break;
        case DSV3_PIPE_SEND_F: {
            int64_t slot, exchange_slot;
            Dsv3Model *m = stage_model(p, a->stage, a->micro, &slot, &exchange_slot);
            DSV3_CALL(dsv3_pipe_exchange_send_activations(
                p->exchange, exchange_slot, neighbour(p, a->stage, 1), dsv3_model_output(m, slot),
                dsv3_model_doc(m, slot)));
            break;
        }
        case DSV3_PIPE_B:
        case DSV3_PIPE_I:
            if (forward_only && a->stage != last_stage) break;
            DSV3_CALL(
                run_backward(p, a, labels, grad_scale, trace, trace_micro, loss_sum, n_labels));
            break;
        case DSV3_PIPE_W:
            if (!forward_only) DSV3_CALL(run_weight(p, a, trace, trace_micro));
            break;
        case DSV3_PIPE_RECV_B:
            if (!forward_only)
                DSV3_CALL(dsv3_pipe_exchange_post_gradient(p->exchange, a->micro, a->stage,
                                                           neighbour(p, a->stage, 1)));
            break;
        case DSV3_PIPE_SEND_B:
            if (!forward_only) {
                int64_t slot, exchange_slot;
                Dsv3Model *m = stage_model(p, a->stage, a->micro, &slot, &exchange_slot);
                DSV3_CALL(dsv3_pipe_exchange_send_gradient(
                    p->exchange, a->micro, neighbour(p, a->stage, -1), dsv3_model_input_grad(m)));
            }
            break;
        }
    }
    return DSV3_OK;
}

int64_t *dsv3_pipeline_tokens_per_expert(const Dsv3PipelineStage *p, int64_t layer,
                                         Dsv3Model **owner) {
    for (int64_t k = 0; k < p->n_models; k++) {
        int64_t *counts = dsv3_model_tokens_per_expert(p->models[k], layer);
        if (counts) {
            *owner = p->models[k];
            return counts;
        }
    }
    return NULL;
}
