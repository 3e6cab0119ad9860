// protocol: what the coordinator and the stage ranks exchange during training.
//
// First the coordinator broadcasts a start plan (step 0: the EOS id) and every rank meets in a
// barrier once the stage ranks have built their models. Per step (DESIGN.md §4): the
// coordinator broadcasts a Dsv3StepPlan over the job
// communicator (a collective: every rank takes part); then, for each micro-batch, it sends
// each stage rank its token windows (DSV3_TAG_BATCH: local_batch_size × (seq_len + 1) int32,
// input = first seq_len, labels = last seq_len of each window); after the optimizer step each
// stage rank sends a Dsv3StepReport (DSV3_TAG_REPORT), followed, when the plan asks for them,
// by the step's expert load (stage rank 0 only: DSV3_TAG_EXPERT_COUNTS, DSV3_TAG_EXPERT_BIAS)
// and its trace events (DSV3_TAG_TRACE; report.n_trace_events of them) — train/report.h.
// A plan with validate = 1 is a validation pass instead of a step: micro_batches held-out
// micro-batches, evaluated without gradients, answered by a report with the loss only
// (train/validation.h). A plan with stop = 1 ends the loop.
#ifndef DSV3_TRAIN_PROTOCOL_H
#define DSV3_TRAIN_PROTOCOL_H

#include <stdint.h>

#include "common/train/trace.h"

// Plan flags: what the stage ranks send after the step's report.
enum {
    DSV3_PLAN_EXPERT_LOAD = 1 << 0, // tokens per expert and expert biases (a logged step)
    DSV3_PLAN_PROFILE = 1 << 1,     // the step's trace events (a profiled step)
};

// In validation windows: no token here (padding rows, positions past validation.seq_len).
// A stage rank reads it as token 0 with an ignored label.
enum { DSV3_PAD_TOKEN = -1 };

typedef struct {
    int64_t step;          // 1-based
    int64_t micro_batches; // per data-parallel rank
    double lr;             // schedule applied
    double grad_scale;     // 1 / labels in the whole global batch
    int32_t eos_id;        // document boundary for block-causal masks (-1: none)
    int32_t stop;          // 1: no more steps
    int32_t flags;         // DSV3_PLAN_* bits
    int32_t validate;      // 1: a validation pass, not a training step
} Dsv3StepPlan;

typedef struct {
    double loss_sum;                   // Σ cross-entropy over this rank's labels
    int64_t n_labels;                  // labels counted
    double grad_norm;                  // global, before clipping (the same on every rank)
    double seconds[DSV3_PHASE_COUNT];  // per phase, summed over the step (trace.h)
    int64_t bytes_current, bytes_peak; // counted allocations of this rank (peak of this step)
    int64_t device_bytes;              // memory of this rank's device (peak.h)
    int64_t n_trace_events;            // events that follow (a profiled step), else 0
} Dsv3StepReport;

#endif
