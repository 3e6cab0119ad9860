// pipeline_step: interprets this rank's schedule list for one training micro-batch.
#include "pipeline_step.h"

#include "common/core/log.h"
#include "common/core/turns.h"

static Dsv3Err trace_add(Dsv3Trace *trace, Dsv3Phase phase, int64_t micro, int64_t stage, double t0,
                         double t1) {
    if (!trace) return DSV3_OK;
    return dsv3_trace_add_stage(trace, phase, (int32_t)micro, (int32_t)stage, t0, t1);
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

// The pipeline rank of the stage after (`step` 1) or before (−1) stage `stage`.
static int64_t neighbour(const Dsv3PipelineStage *p, int64_t stage, int64_t step) {
    return dsv3_pipe_rank_of(p->schedule, stage + step, NULL);
}

// An F, B or I with its input in: what the model call needs, and the last stage's loss.
typedef struct {
    const Dsv3PipeAction *a;
    Dsv3Model *m;
    int64_t slot;
    Dsv3StageInput in;  // F
    Dsv3StageGrad grad; // B, I
    double loss;
    int64_t n_labels;
} Compute;

// Takes compute a's input: on stage 0 the tokens, on the last stage the labels, elsewhere the
// message from the neighbouring stage, waited for.
static Dsv3Err compute_prepare(const Dsv3PipelineStage *p, const Dsv3PipeAction *a,
                               const int32_t *tokens, const int32_t *labels, float grad_scale,
                               Compute *c) {
    int64_t slot, exchange_slot;
    Dsv3Model *m = stage_model(p, a->stage, a->micro, &slot, &exchange_slot);
    *c = (Compute){.a = a, .m = m, .slot = slot};
    if (a->op == DSV3_PIPE_F) {
        if (a->stage == 0)
            c->in.tokens = tokens + a->micro * p->micro_tokens;
        else
            DSV3_CALL(dsv3_pipe_exchange_wait_activations(p->exchange, a->micro, a->stage, &c->in.x,
                                                          &c->in.doc));
        if (p->exchange) DSV3_CALL(dsv3_pipe_exchange_release_slot(p->exchange, exchange_slot));
        return DSV3_OK;
    }
    c->grad.grad_scale = grad_scale;
    if (a->stage == dsv3_pipe_stage_count(p->schedule) - 1)
        c->grad.labels = labels + a->micro * p->micro_tokens;
    else
        DSV3_CALL(dsv3_pipe_exchange_wait_gradient(p->exchange, a->micro, a->stage, &c->grad.dout));
    return DSV3_OK;
}

// The model call of a prepared compute (a Dsv3TurnFn). B, or I where the schedule splits
// backward (the model then keeps the weight gradients' inputs in the slot until W); a B of a
// model that splits adds its weight gradients at once.
static Dsv3Err compute_run(void *arg) {
    Compute *c = arg;
    if (c->a->op == DSV3_PIPE_F) return dsv3_model_forward(c->m, c->slot, &c->in);
    DSV3_CALL(dsv3_model_backward(c->m, c->slot, &c->grad, &c->loss, &c->n_labels));
    if (c->a->op == DSV3_PIPE_B) DSV3_CALL(dsv3_model_backward_weight(c->m, c->slot));
    return DSV3_OK;
}

// Adds compute c's loss and its trace span [t0, t1].
static Dsv3Err compute_done(const Compute *c, Dsv3Trace *trace, int64_t trace_micro, double t0,
                            double t1, double *loss_sum, int64_t *n_labels) {
    *loss_sum += c->loss;
    *n_labels += c->n_labels;
    return trace_add(trace, c->a->op == DSV3_PIPE_F ? DSV3_PHASE_FORWARD : DSV3_PHASE_BACKWARD,
                     trace_micro + c->a->micro, c->a->stage, t0, t1);
}

static Dsv3Err run_compute(const Dsv3PipelineStage *p, const Dsv3PipeAction *a,
                           const int32_t *tokens, const int32_t *labels, float grad_scale,
                           Dsv3Trace *trace, int64_t trace_micro, double *loss_sum,
                           int64_t *n_labels) {
    Compute c;
    DSV3_CALL(compute_prepare(p, a, tokens, labels, grad_scale, &c));
    double t0 = dsv3_log_seconds();
    DSV3_CALL(compute_run(&c));
    return compute_done(&c, trace, trace_micro, t0, dsv3_log_seconds(), loss_sum, n_labels);
}

// DualPipeV's pair: the F and the B after it, both inputs in, as turns (core/turns.h) that hand
// over while one waits for its expert servers. The trace shows each one's share of the pair's
// time, the F's first.
static Dsv3Err run_pair(const Dsv3PipelineStage *p, const Dsv3PipeAction *a, const int32_t *tokens,
                        const int32_t *labels, float grad_scale, Dsv3Trace *trace,
                        int64_t trace_micro, double *loss_sum, int64_t *n_labels) {
    Compute f, b;
    DSV3_CALL(compute_prepare(p, a, tokens, labels, grad_scale, &f));
    DSV3_CALL(compute_prepare(p, a + 1, tokens, labels, grad_scale, &b));
    double t0 = dsv3_log_seconds(), held[2];
    DSV3_CALL(dsv3_turns_run(compute_run, &f, compute_run, &b, held));
    DSV3_CALL(compute_done(&f, trace, trace_micro, t0, t0 + held[0], loss_sum, n_labels));
    return compute_done(&b, trace, trace_micro, t0 + held[0], t0 + held[0] + held[1], loss_sum,
                        n_labels);
}

static Dsv3Err run_weight(const Dsv3PipelineStage *p, const Dsv3PipeAction *a, Dsv3Trace *trace,
                          int64_t trace_micro) {
    int64_t slot, exchange_slot;
    Dsv3Model *m = stage_model(p, a->stage, a->micro, &slot, &exchange_slot);
    double t0 = dsv3_log_seconds();
    DSV3_CALL(dsv3_model_backward_weight(m, slot));
    return trace_add(trace, DSV3_PHASE_BACKWARD_WEIGHT, trace_micro + a->micro, a->stage, t0,
                     dsv3_log_seconds());
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
        case DSV3_PIPE_F:
            if (a->paired && !forward_only) {
                DSV3_CALL(run_pair(p, a, tokens, labels, grad_scale, trace, trace_micro, loss_sum,
                                   n_labels));
                i++; // the pair's B ran too
            } else {
                DSV3_CALL(run_compute(p, a, tokens, labels, grad_scale, trace, trace_micro,
                                      loss_sum, n_labels));
            }
            break;
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
            DSV3_CALL(run_compute(p, a, tokens, labels, grad_scale, trace, trace_micro, loss_sum,
                                  n_labels));
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
