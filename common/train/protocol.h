// protocol: what the coordinator and the stage ranks exchange during training.
//
// First the coordinator broadcasts a start plan (step 0: the EOS id) and every rank meets in a
// barrier once the stage ranks have built their models. Per step (DESIGN.md §4): the
// coordinator broadcasts a Dsv3StepPlan over the job
// communicator (a collective: every rank takes part); then, for each micro-batch, it sends
// each stage rank its token windows (DSV3_TAG_BATCH: local_batch_size × (seq_len + 1) int32,
// input = first seq_len, labels = last seq_len of each window); after the optimizer step each
// stage rank sends a Dsv3StepReport (DSV3_TAG_REPORT). A plan with stop = 1 ends the loop.
#ifndef DSV3_TRAIN_PROTOCOL_H
#define DSV3_TRAIN_PROTOCOL_H

#include <stdint.h>

typedef struct {
    int64_t step;          // 1-based
    int64_t micro_batches; // per data-parallel rank
    double lr;             // schedule applied
    double grad_scale;     // 1 / labels in the whole global batch
    int32_t eos_id;        // document boundary for block-causal masks (-1: none)
    int32_t stop;          // 1: no more steps
} Dsv3StepPlan;

typedef struct {
    double loss_sum;        // Σ cross-entropy over this rank's labels
    int64_t n_labels;       // labels counted
    double grad_norm;       // global, before clipping (the same on every rank)
    double seconds_forward, seconds_backward, seconds_reduce, seconds_optimizer;
    int64_t bytes_current, bytes_peak; // counted allocations of this rank
} Dsv3StepReport;

#endif
