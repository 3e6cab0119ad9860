// pipeline_step: one training micro-batch through this rank's pipeline stages, as its schedule
// (train/pipeline_schedule.h) lists the actions.
//
// A training micro-batch of B sequences runs as n_micro pipeline micro-batches of B / n_micro
// sequences (rows [m·B/n_micro, (m+1)·B/n_micro) of the tokens and labels). The rank holds one
// model per pipeline stage of its list (several under a looped or v schedule), in the order of
// dsv3_pipe_stage_of. F(m, s) runs stage s's forward into its activation slot m % slots: on
// stage 0 from the tokens, elsewhere from the activations the previous stage sent; B(m, s) runs
// the backward: on the last stage from the labels (the loss of the whole global batch's scale),
// elsewhere from the gradient the next stage sent. Under a v schedule the models split their
// backward: I(m, s) is that backward without the layers' linear weight gradients, W(m, s) adds
// them, and a B runs both at once. A paired F (DualPipeV with expert servers) and the B listed
// after it run as turns (core/turns.h), each computing while the other's routed rows are at
// the servers; the trace shows each one's share of the pair's time, the F's first. A
// forward-only pass runs them in turn. RECV and
// SEND actions go to the pipeline exchange (comm/pipe_exchange.h) with the rank of the stage at the
// other end, and its slots number every stage's in turn. Without a pipeline (pp 1) the schedule is
// "F0.0 B0.0" and no exchange is needed.
//
// A forward-only pass (validation) runs the F actions and their sends, and on the last stage
// the loss of each micro-batch (its B or I with grad_scale 0); nothing travels backwards and no
// W runs.
#ifndef DSV3_TRAIN_PIPELINE_STEP_H
#define DSV3_TRAIN_PIPELINE_STEP_H

#include <stdint.h>

#include "common/comm/pipe_exchange.h"
#include "common/comm/plan.h"
#include "common/core/error.h"
#include "common/model/model.h"
#include "common/train/pipeline_schedule.h"
#include "common/train/trace.h"

typedef struct {
    Dsv3Model *const *models; // (n_models) one per pipeline stage of the rank, in its order
    int64_t n_models;         // the schedule's stages_per_rank
    const Dsv3PipeSchedule *schedule;
    int64_t rank;                // this rank's pipeline rank (its list in the schedule)
    const Dsv3PlanChunk *chunks; // (n_models) each model's stage and activation slots
    int64_t micro_tokens;        // tokens per pipeline micro-batch
    Dsv3PipeExchange *exchange;  // NULL without a pipeline
} Dsv3PipelineStage;

// One training micro-batch: `tokens` (stage 0) and `labels` (the last stage; NULL elsewhere)
// of n_micro · micro_tokens tokens. Adds the last stage's Σ cross-entropy to *loss_sum and its
// labels to *n_labels; trace events are numbered from `trace_micro`. `grad_scale` 0 runs the
// forward-only pass.
Dsv3Err dsv3_pipeline_run(const Dsv3PipelineStage *p, const int32_t *tokens, const int32_t *labels,
                          float grad_scale, Dsv3Trace *trace, int64_t trace_micro, double *loss_sum,
                          int64_t *n_labels);

// The tokens per expert (E) of MoE layer `layer` in whichever of the rank's models runs it, and
// that model in *owner; NULL when none of them does.
int64_t *dsv3_pipeline_tokens_per_expert(const Dsv3PipelineStage *p, int64_t layer,
                                         Dsv3Model **owner);

#endif
